"""Run the emulator as a subprocess from tests.

A subprocess, not a thread, because the tests drive Modal's SDK and the C engine
from the test process, and because shutdown must be observable from outside.

    with EmulatorProcess(tmp_path / "emulator") as emulator:
        env = emulator.sdk_env()          # for a subprocess that imports modal
        emulator.add_fault("error:method=SandboxCreate,calls=1,status=UNAVAILABLE")
        emulator.state()["calls"]["SandboxCreate"]
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any, Dict, Iterable, List, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class EmulatorError(RuntimeError):
    """The emulator failed to start, or a control API request failed."""


class EmulatorProcess:
    """An emulator subprocess on free loopback ports.

    ``url`` is the gRPC URL for MODAL_SERVER_URL, ``control_url`` the control API.
    """

    def __init__(self, state_dir: PathLike, *, tokens: Optional[Dict[str, str]] = None,
                 secrets: Optional[Dict[str, Dict[str, str]]] = None, faults: Iterable[Any] = (),
                 tls_cert: Optional[PathLike] = None, tls_key: Optional[PathLike] = None,
                 host: str = "127.0.0.1", extra_args: Iterable[str] = (), start_timeout: float = 30.0) -> None:
        self.state_dir = os.fspath(state_dir)
        self.tokens = dict(tokens or {})
        self.secrets = secrets
        self.faults = list(faults)
        self.tls_cert = os.fspath(tls_cert) if tls_cert else None
        self.tls_key = os.fspath(tls_key) if tls_key else None
        self.host = host
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.process: Optional[subprocess.Popen] = None
        self.url = ""
        self.control_url = ""
        self.log_path = os.path.join(self.state_dir, "emulator.log")
        # Control requests go to loopback, never through an HTTP proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def command(self) -> List[str]:
        command = [sys.executable, "-m", "mfmodal.emulator", "--port", "0", "--state-dir", self.state_dir,
                   "--host", self.host]
        for token_id, token_secret in self.tokens.items():
            command += ["--token-id", token_id, "--token-secret", token_secret]
        if self.secrets is not None:
            path = os.path.join(self.state_dir, "secrets.json")
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self.secrets, handle)
            command += ["--secrets-file", path]
        for fault in self.faults:
            command += ["--fault", fault if isinstance(fault, str) else json.dumps(fault)]
        if self.tls_cert:
            command += ["--tls-cert", self.tls_cert, "--tls-key", self.tls_key or ""]
        return command + self.extra_args

    def start(self) -> "EmulatorProcess":
        os.makedirs(self.state_dir, exist_ok=True)
        log_file = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log_file,
                                            stdin=subprocess.DEVNULL)
        finally:
            log_file.close()
        lines = self._read_lines(2)
        self.url = lines[0]
        self.control_url = lines[1].split(" ", 1)[1]
        return self

    def _read_lines(self, count: int) -> List[str]:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        lines: "queue.Queue[bytes]" = queue.Queue()

        def read() -> None:
            for _ in range(count):
                lines.put(stdout.readline())

        threading.Thread(target=read, daemon=True).start()
        result = []
        for _ in range(count):
            try:
                line = lines.get(timeout=self.start_timeout).decode().strip()
            except queue.Empty:
                self.kill()
                raise EmulatorError(f"emulator printed no URL within {self.start_timeout} s; log:\n{self.log()}")
            if not line:
                code = self.process.wait(timeout=5)
                raise EmulatorError(f"emulator exited with status {code} before printing its URLs; log:\n{self.log()}")
            result.append(line)
        return result

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    # Control API

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.control_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            raise EmulatorError(f"control API {method} {path} failed with HTTP {exc.code}: {detail}") from None

    def state(self) -> Dict[str, Any]:
        """Return the live state dump (the same content as STATE_DIR/state.json)."""
        return self._request("GET", "/state")

    def state_file(self) -> Dict[str, Any]:
        with open(os.path.join(self.state_dir, "state.json"), encoding="utf-8") as handle:
            return json.load(handle)

    def add_fault(self, spec: Union[str, Dict[str, Any], None] = None, **params: Any) -> Dict[str, Any]:
        """Add a fault from a spec string, a dict, or keyword parameters (``kind=...``); return it."""
        if spec is None:
            body: Dict[str, Any] = dict(params)
        elif isinstance(spec, str):
            body = {"spec": spec}
        else:
            body = dict(spec)
        return self._request("POST", "/faults", body)["fault"]

    def remove_fault(self, fault_id: int) -> None:
        self._request("DELETE", f"/faults/{fault_id}")

    def clear_faults(self) -> None:
        self._request("DELETE", "/faults")

    def faults_state(self) -> List[Dict[str, Any]]:
        return self._request("GET", "/faults")

    # SDK

    def sdk_env(self, token_id: str = "ak-test", token_secret: str = "as-test",
                base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """Return an environment in which Modal's SDK talks to this emulator and reads no config file."""
        env = dict(os.environ if base is None else base)
        for key in list(env):
            if key.startswith("MODAL_"):
                del env[key]
        env.update({
            "MODAL_SERVER_URL": self.url,
            "MODAL_TOKEN_ID": token_id,
            "MODAL_TOKEN_SECRET": token_secret,
            "MODAL_CONFIG_PATH": os.path.join(self.state_dir, "no-such-modal.toml"),
            "MODAL_DISABLE_API_PROXY": "1",
            # The emulator serves V1 sandboxes only, and SDK 1.6 picks V2 for sandboxes without a GPU.
            "MODAL_SANDBOX_V2": "0",
        })
        return env

    # Lifecycle

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """Send SIGTERM and wait; SIGKILL after ``timeout`` seconds. Return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "EmulatorProcess":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
