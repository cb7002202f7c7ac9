"""Fixtures for the job tests: an emulator per test, and a way to run
mfmodal-engine run against it."""

import json
import os
import signal
import subprocess
import time

import pytest

from enginetest import RECORDED_OUTPUT, built_program, engine_env
from mfmodal.emulator.testing import EmulatorProcess


@pytest.fixture
def emulator(tmp_path):
    emu = EmulatorProcess(tmp_path / "emulator").start()
    yield emu
    emu.stop()


class EngineRun:
    """mfmodal-engine run in the background, with its output read line by line."""

    def __init__(self, emulator, job, tmp_path, env_extra=None):
        self.job_file = tmp_path / "job.json"
        self.job_file.write_text(json.dumps(job))
        env = engine_env(emulator.url, **(env_extra or {}))
        argv = [str(built_program("mfmodal-engine")), "run", "--job", str(self.job_file)]
        wrapper = os.environ.get("MFMODAL_TEST_WRAPPER", "").split()
        self.proc = subprocess.Popen(wrapper + argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stderr_lines = []
        self.stdout = ""

    def wait_for_log(self, text, timeout=30):
        """Read stderr until a line contains text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr_lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no log line with {text!r}; got:\n{''.join(self.stderr_lines)}")

    def signal(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)

    def finish(self, timeout=60):
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout = out
        self.stderr = "".join(self.stderr_lines) + err
        RECORDED_OUTPUT.append(("mfmodal-engine run", self.stdout, self.stderr))
        return self.proc.returncode


@pytest.fixture
def run_job(emulator, tmp_path):
    """Start a job; returns the EngineRun."""

    def start(job, env_extra=None):
        return EngineRun(emulator, job, tmp_path, env_extra)

    return start


def task_lines(text):
    """The messages of the mflog lines in text, in order."""
    lines = []
    for line in text.splitlines():
        if line.startswith("[MFLOG|0|"):
            lines.append(line.split("]", 1)[1])
    return lines


def sandboxes(emulator):
    return list(emulator.state()["sandboxes"].values())
