"""Helpers of the end-to-end flow tests: a workspace that runs flows as
subprocesses against the emulator and the local S3 server."""

import itertools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from enginetest import RECORDED_OUTPUT, TEST_TOKEN_ID, TEST_TOKEN_SECRET, built_program
from mfmodal.local.servers import offline_environment, s3_client

FLOWS_DIR = pathlib.Path(__file__).resolve().parent / "flows"
EXAMPLE_FLOW = pathlib.Path(__file__).resolve().parents[2] / "python" / "mfmodal" / "local" / "example_flow.py"

# A named Modal secret of the emulator that the secret test reads.
TEAM_SECRET_NAME = "team-token"
TEAM_TOKEN_VALUE = "team-7c41e9d2b8"

FLOW_TIMEOUT_SECS = 300

_bucket_numbers = itertools.count(1)


def engine_path():
    """Return the engine the flows use: $MFMODAL_ENGINE, else the built one."""
    return os.environ.get("MFMODAL_ENGINE") or str(built_program("mfmodal-engine"))


class FlowWorkspace:
    """A working directory with its own bucket and METAFLOW_HOME, where flows run."""

    def __init__(self, root, emulator, s3):
        self.root = root
        self.cwd = root / "work"
        self.cwd.mkdir()
        home = root / "metaflow-home"
        home.mkdir()
        self.emulator = emulator
        self.bucket = "mfmodal-flows-%d" % next(_bucket_numbers)
        s3_client(s3.url).create_bucket(Bucket=self.bucket)
        self.env = offline_environment(
            os.environ, emulator.url, s3.url, "s3://%s/metaflow" % self.bucket,
            str(home), str(root / "no-modal.toml"))
        self.env.update({
            "MODAL_TOKEN_ID": TEST_TOKEN_ID,
            "MODAL_TOKEN_SECRET": TEST_TOKEN_SECRET,
            "MFMODAL_ENGINE": engine_path(),
            "PATH": os.pathsep.join([os.path.dirname(sys.executable),
                                     os.environ.get("PATH", os.defpath)]),
        })
        self.flow_file = None

    def add_flow(self, name):
        """Copy tests/flows/flows/NAME.py into the working directory."""
        source = EXAMPLE_FLOW if name == "example_flow" else FLOWS_DIR / ("%s.py" % name)
        shutil.copyfile(source, self.cwd / source.name)
        self.flow_file = source.name
        return self.flow_file

    def run(self, *args, env=None, timeout=FLOW_TIMEOUT_SECS):
        """Run `python FLOW ARGS` and return the CompletedProcess."""
        full_env = dict(self.env)
        full_env.update(env or {})
        argv = [sys.executable, self.flow_file] + [str(a) for a in args]
        result = subprocess.run(argv, cwd=self.cwd, env=full_env, capture_output=True,
                                text=True, timeout=timeout)
        RECORDED_OUTPUT.append((" ".join(argv), result.stdout, result.stderr))
        return result

    def run_flow(self, command="run", *args, env=None, expect_status=0):
        """Run the flow's run or resume command; return (run id, CompletedProcess)."""
        run_id_file = self.root / "run-id"
        if run_id_file.exists():
            run_id_file.unlink()
        result = self.run(command, "--run-id-file", run_id_file, *args, env=env)
        if expect_status is not None:
            assert (result.returncode == 0) == (expect_status == 0), _describe(result)
        run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
        return run_id, result

    def start(self, *args):
        """Start `python FLOW ARGS` in a process group of its own; return the Popen."""
        argv = [sys.executable, self.flow_file] + [str(a) for a in args]
        return subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def wait_for_sandbox(self, flow_name, step, timeout=120):
        """Return the first running sandbox of step in flow_name, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sb in self.emulator.state()["sandboxes"].values():
                tags = sb["tags"]
                if (tags.get("metaflow.flow") == flow_name and tags.get("metaflow.step") == step
                        and sb["status"] == "running" and sb["stdout_entries"] > 0):
                    return sb
            time.sleep(0.2)
        raise AssertionError("no running sandbox of %s/%s within %d s" % (flow_name, step, timeout))

    def client(self, code):
        """Run code with Metaflow's client in the workspace; return its JSON output.

        The code prints one JSON document as its last line.
        """
        prelude = "import json\nfrom metaflow import Flow, Run, Step, Task, namespace\nnamespace(None)\n"
        argv = [sys.executable, "-c", prelude + code]
        result = subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True,
                                text=True, timeout=120)
        RECORDED_OUTPUT.append(("metaflow client", result.stdout, result.stderr))
        assert result.returncode == 0, _describe(result)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def sandboxes(self, run_id, step=None):
        """The emulator's records of this run's sandboxes, oldest first."""
        found = [
            sb for sb in self.emulator.state()["sandboxes"].values()
            if sb["tags"].get("metaflow.run") == str(run_id)
            and (step is None or sb["tags"].get("metaflow.step") == step)
        ]
        return sorted(found, key=lambda sb: sb["created_at"])


def _describe(result):
    return "exit status %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        result.returncode, result.stdout[-8000:], result.stderr[-8000:])


def assert_none_running(emulator):
    state = emulator.state()
    running = [sb["name"] for sb in state["sandboxes"].values() if sb["status"] != "finished"]
    assert running == []
    assert state["sandboxes_alive"] == 0
