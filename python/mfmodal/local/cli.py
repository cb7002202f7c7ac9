"""mfmodal-local: run a flow with @modal steps on this machine only.

Starts the Modal emulator and moto's S3 server on 127.0.0.1, points Metaflow,
mfmodal-engine and the sandboxes at them, runs the command, saves the bucket
under the state directory and stops the servers.

    mfmodal-local run flow.py --alpha 0.5     # python flow.py run --alpha 0.5
    mfmodal-local resume flow.py              # python flow.py resume
    mfmodal-local exec -- python flow.py logs 1712/train
    mfmodal-local example                     # the bundled example flow
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
from typing import List, Optional

from mfmodal.local import s3mirror
from mfmodal.local.servers import (
    MotoS3Server,
    ServerError,
    offline_environment,
    s3_client,
    start_emulator,
    stop_all,
)

log = logging.getLogger("mfmodal.local")

BUCKET = "mfmodal-local"
DATASTORE_PREFIX = "metaflow"
EXAMPLE_FLOW_FILE = "modal_example_flow.py"


class OfflineSession:
    """The emulator, the S3 server and the environment that uses them.

    Layout of the state directory:
      emulator/        the emulator's state.json, log and sandbox directories
      s3/objects/      the bucket's objects, saved after each command
      s3/metadata.json their S3 metadata
      moto.log         the S3 server's request log
      metaflow-home/   an empty METAFLOW_HOME, so no user configuration is read
    """

    def __init__(self, state_dir: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.s3_dir = os.path.join(self.state_dir, "s3")
        self.servers: List[object] = []
        self.env: dict = {}
        self.client = None

    @property
    def datastore_root(self) -> str:
        return "s3://%s/%s" % (BUCKET, DATASTORE_PREFIX)

    def start(self) -> "OfflineSession":
        home = os.path.join(self.state_dir, "metaflow-home")
        os.makedirs(home, exist_ok=True)
        try:
            s3 = MotoS3Server(os.path.join(self.state_dir, "moto.log"), detached=True).start()
            self.servers.append(s3)
            emulator = start_emulator(os.path.join(self.state_dir, "emulator"), detached=True)
            self.servers.append(emulator)
        except BaseException:
            stop_all(self.servers)
            raise
        log.info("Modal emulator at %s, S3 at %s", emulator.url, s3.url)

        self.client = s3_client(s3.url)
        self.client.create_bucket(Bucket=BUCKET)
        restored = s3mirror.restore_bucket(self.client, BUCKET, self.s3_dir)
        if restored:
            log.info("restored %d objects of earlier runs from %s", restored, self.s3_dir)
        self.env = offline_environment(
            os.environ, emulator.url, s3.url, self.datastore_root, home,
            os.path.join(self.state_dir, "no-modal.toml"),
        )
        # `python` in a command is this interpreter, the one with Metaflow and
        # this package, as it is in the emulator's sandboxes.
        self.env["PATH"] = os.pathsep.join(
            [os.path.dirname(sys.executable), self.env.get("PATH", os.defpath)])
        return self

    def stop(self) -> None:
        try:
            if self.client is not None:
                saved = s3mirror.save_bucket(self.client, BUCKET, self.s3_dir)
                log.info("saved %d objects to %s", saved, os.path.join(self.s3_dir, "objects"))
        finally:
            stop_all(self.servers)

    def run(self, argv: List[str], cwd: Optional[str] = None) -> int:
        """Run argv in the offline environment and return its exit status.

        Ctrl-C goes to the child, whose runtime terminates its sandboxes,
        while this process ignores it and waits for the child.
        """
        log.info("running %s", " ".join(argv))
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return subprocess.call(argv, env=self.env, cwd=cwd,
                                   preexec_fn=_default_sigint)
        finally:
            signal.signal(signal.SIGINT, previous)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _check_engine() -> Optional[str]:
    """Return why mfmodal-engine cannot be used, or None when it can."""
    # Metaflow loads its extensions while it is imported, so it must come
    # before any module of the extension.
    import metaflow  # noqa: F401
    from metaflow_extensions.modal.plugins.modal_engine import find_engine
    from metaflow_extensions.modal.plugins.modal_exception import ModalException

    try:
        find_engine()
    except ModalException as exc:
        return str(exc)
    return None


def _report_run(session: OfflineSession, run_id_file: str, cwd: str, flow: str, status: int) -> None:
    """Print where the run's artifacts, logs and metadata are."""
    try:
        with open(run_id_file, encoding="utf-8") as handle:
            run_id = handle.read().strip()
    except FileNotFoundError:
        sys.stdout.write("The flow exited with status %d before starting a run.\n" % status)
        return
    root = os.path.join(session.s3_dir, "objects", DATASTORE_PREFIX)
    flow_name = next(
        (name for name in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, name, run_id))),
        None,
    ) if os.path.isdir(root) else None
    lines = ["Run %s finished with exit status %d." % (run_id, status)]
    if flow_name is not None:
        lines += [
            "Task logs and data.json files: %s" % os.path.join(root, flow_name, run_id),
            "Artifacts and code package (content-addressed): %s" % os.path.join(root, flow_name, "data"),
            "Metadata: %s" % os.path.join(cwd, ".metaflow", flow_name, run_id),
        ]
    lines += [
        "Emulator state (one record per sandbox): %s" % os.path.join(session.state_dir, "emulator", "state.json"),
        "Show a step's logs: %smfmodal-local --state-dir %s exec -- python %s logs %s/STEP"
        % ("" if cwd == os.getcwd() else "cd %s && " % cwd, session.state_dir, flow, run_id),
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def _run_flow(session: OfflineSession, command: str, flow: str, args: List[str], cwd: str) -> int:
    run_id_file = os.path.join(session.state_dir, "last-run-id")
    if os.path.exists(run_id_file):
        os.unlink(run_id_file)
    status = session.run([sys.executable, flow, command, "--run-id-file", run_id_file] + args, cwd=cwd)
    session.stop()
    _report_run(session, run_id_file, cwd, flow, status)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfmodal-local",
        description="Run Metaflow flows with @modal steps offline: the Modal emulator "
        "and moto's S3 server run on 127.0.0.1 for the length of the command.",
    )
    parser.add_argument("--state-dir", default=".mfmodal-local",
                        help="directory for the emulator, the saved S3 bucket and logs "
                        "(default: .mfmodal-local)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="mfmodal-local's own messages (default: info)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in ("run", "resume"):
        sub = commands.add_parser(name, help="python FLOW %s [ARGS]" % name)
        sub.add_argument("flow", metavar="FLOW", help="the flow's Python file")
        sub.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                         help="options of the flow's %s command" % name)
    sub = commands.add_parser("exec", help="run any command with the servers up, such as "
                              "`exec -- python flow.py logs RUN/STEP`")
    sub.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND")
    sub = commands.add_parser("example", help="run the bundled example flow (start, then "
                              "train with @modal(gpu=\"A10G\", memory=8192), then end)")
    sub.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                     help="options of the flow's run command")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="mfmodal-local: %(message)s", stream=sys.stderr)

    if args.command == "exec":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            log.error("exec needs a command, such as: mfmodal-local exec -- python flow.py logs RUN/STEP")
            return 2
    problem = _check_engine()
    if problem is not None:
        log.error("%s", problem)
        return 2

    session = OfflineSession(args.state_dir)
    try:
        session.start()
    except (ServerError, OSError) as exc:
        log.error("could not start the local servers: %s", exc)
        return 1

    try:
        if args.command == "exec":
            status = session.run(command)
            session.stop()
            return status
        if args.command == "example":
            workdir = os.path.join(session.state_dir, "example")
            os.makedirs(workdir, exist_ok=True)
            shutil.copyfile(os.path.join(os.path.dirname(__file__), "example_flow.py"),
                            os.path.join(workdir, EXAMPLE_FLOW_FILE))
            return _run_flow(session, "run", EXAMPLE_FLOW_FILE, args.args, workdir)
        return _run_flow(session, args.command, args.flow, args.args, os.getcwd())
    finally:
        # After a normal end stop() has saved the bucket, so this only covers errors.
        stop_all(session.servers)
