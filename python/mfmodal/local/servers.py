"""Loopback stand-ins for Modal and S3: the emulator and moto's S3 server.

Used by `mfmodal-local` and by the end-to-end flow tests.  Everything listens
on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, Iterable, List, Mapping, Optional

from mfmodal.emulator.testing import EmulatorProcess

log = logging.getLogger("mfmodal.local")

# Credentials of the offline setup.  moto accepts any pair, so these only have
# to be the same for the engine, the flow and the sandboxes.
LOCAL_AWS_ACCESS_KEY_ID = "mfmodal-local-key"
LOCAL_AWS_SECRET_ACCESS_KEY = "mfmodal-local-secret"
LOCAL_REGION = "us-east-1"
LOCAL_MODAL_TOKEN_ID = "ak-mfmodal-local"
LOCAL_MODAL_TOKEN_SECRET = "as-mfmodal-local"
# The emulator's named secret that gives sandboxes the S3 credentials, the way
# a Modal secret does on Modal.
LOCAL_AWS_SECRET_NAME = "mfmodal-local-aws"

# Inherited variables with these prefixes could point a run at real services
# or at a user's configuration, so the offline environment drops them.
DROPPED_PREFIXES = ("METAFLOW_", "MODAL_", "AWS_")

SERVER_START_TIMEOUT_SECS = 30.0
SERVER_STOP_TIMEOUT_SECS = 10.0


class ServerError(RuntimeError):
    """A local server failed to start."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class MotoS3Server:
    """moto's S3 server as a subprocess on a free loopback port.

    ``url`` is its endpoint for METAFLOW_S3_ENDPOINT_URL, and its request log
    goes to ``log_path``.
    """

    def __init__(self, log_path: str, host: str = "127.0.0.1", detached: bool = False) -> None:
        self.log_path = log_path
        self.host = host
        # In a session of its own, like a detached emulator (see start_emulator).
        self.detached = detached
        self.port = 0
        self.url = ""
        self.process: Optional[subprocess.Popen] = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self, attempts: int = 3) -> "MotoS3Server":
        # The port is picked before moto binds it, so another process may take
        # it in between.  A failed start is retried on a new port.
        for _ in range(attempts):
            self.port = free_port(self.host)
            self.url = "http://%s:%d" % (self.host, self.port)
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                    env=_without_proxies(os.environ), start_new_session=self.detached,
                )
            if self._wait_ready():
                log.debug("moto S3 server %s started (pid %d)", self.url, self.process.pid)
                return self
            self.stop()
        raise ServerError("moto's S3 server did not start, see %s" % self.log_path)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with self._opener.open(self.url + "/moto-api/data.json", timeout=2):
                    return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "MotoS3Server":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _without_proxies(env: Mapping[str, str]) -> Dict[str, str]:
    """Return env with loopback excluded from any HTTP proxy."""
    result = dict(env)
    no_proxy = [p for p in result.get("NO_PROXY", "").split(",") if p]
    for host in ("127.0.0.1", "localhost"):
        if host not in no_proxy:
            no_proxy.append(host)
    result["NO_PROXY"] = result["no_proxy"] = ",".join(no_proxy)
    return result


def s3_client(endpoint_url: str):
    """Return a boto3 S3 client for the local server."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=LOCAL_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=LOCAL_AWS_SECRET_ACCESS_KEY,
        region_name=LOCAL_REGION,
    ).client("s3", endpoint_url=endpoint_url)


def start_emulator(state_dir: str, extra_secrets: Optional[Dict[str, Dict[str, str]]] = None,
                   extra_args: Iterable[str] = (), detached: bool = False) -> EmulatorProcess:
    """Start the Modal emulator with the offline token and the S3 credentials secret.

    With detached, the emulator runs in a session of its own, so a Ctrl-C in
    the terminal reaches the flow (which then terminates its sandboxes) but
    not the emulator.
    """
    secrets = {
        LOCAL_AWS_SECRET_NAME: {
            "AWS_ACCESS_KEY_ID": LOCAL_AWS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
        },
    }
    secrets.update(extra_secrets or {})
    emulator = EmulatorProcess(
        state_dir,
        tokens={LOCAL_MODAL_TOKEN_ID: LOCAL_MODAL_TOKEN_SECRET},
        secrets=secrets,
        extra_args=list(extra_args),
    )
    if not detached:
        return emulator.start()
    os.makedirs(emulator.state_dir, exist_ok=True)
    with open(emulator.log_path, "ab") as log_file:
        emulator.process = subprocess.Popen(
            emulator.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=log_file, start_new_session=True,
        )
    # The emulator prints its gRPC URL, then "control URL", once it listens.
    lines = _read_lines(emulator.process, 2, SERVER_START_TIMEOUT_SECS)
    if len(lines) < 2:
        emulator.kill()
        raise ServerError("the Modal emulator did not start, see %s" % emulator.log_path)
    emulator.url = lines[0]
    emulator.control_url = lines[1].split(" ", 1)[1]
    return emulator


def _read_lines(process: subprocess.Popen, count: int, timeout: float) -> List[str]:
    """Return up to count lines of process's stdout, fewer on timeout or EOF."""
    found: "queue.Queue[str]" = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for _ in range(count):
            found.put(process.stdout.readline().decode(errors="replace").strip())

    threading.Thread(target=read, daemon=True).start()
    lines = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        try:
            line = found.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not line:
            break
        lines.append(line)
    return lines


def offline_environment(base: Mapping[str, str], emulator_url: str, s3_url: str,
                        datastore_root: str, metaflow_home: str,
                        modal_config_path: str) -> Dict[str, str]:
    """Return an environment in which a flow uses the emulator and the local S3.

    Variables that could reach real services or a user's configuration
    (DROPPED_PREFIXES) are removed, and METAFLOW_HOME points at an empty
    directory so no Metaflow configuration file is read.
    """
    env = {k: v for k, v in base.items() if not k.startswith(DROPPED_PREFIXES)}
    env = _without_proxies(env)
    env.update({
        "MODAL_SERVER_URL": emulator_url,
        "MODAL_TOKEN_ID": LOCAL_MODAL_TOKEN_ID,
        "MODAL_TOKEN_SECRET": LOCAL_MODAL_TOKEN_SECRET,
        "MODAL_CONFIG_PATH": modal_config_path,
        "AWS_ACCESS_KEY_ID": LOCAL_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        # No shared AWS files: the credentials above are the only ones.
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(metaflow_home, "no-aws-credentials"),
        "AWS_CONFIG_FILE": os.path.join(metaflow_home, "no-aws-config"),
        "METAFLOW_HOME": metaflow_home,
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": datastore_root,
        "METAFLOW_S3_ENDPOINT_URL": s3_url,
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_MODAL_SECRETS": LOCAL_AWS_SECRET_NAME,
        "USERNAME": base.get("USERNAME") or base.get("USER") or "mfmodal-local",
    })
    return env


def stop_all(servers: List[object]) -> None:
    """Stop servers in reverse start order, logging any that fails to stop."""
    for server in reversed(servers):
        try:
            server.stop()  # type: ignore[attr-defined]
        except OSError as exc:
            log.warning("could not stop %s: %s", server, exc)
