"""mfmodal-engine --jobs against the local Modal emulator."""

import json
import os
import signal
import subprocess
import time

import pytest

from enginetest import RECORDED_OUTPUT, built_program, engine_env, run_program
from mfmodal.emulator.testing import EmulatorProcess

IMAGE = {"registry": "python:3.11-slim"}


@pytest.fixture
def emulator(tmp_path):
    emu = EmulatorProcess(tmp_path / "emulator").start()
    yield emu
    emu.stop()


def write_jobs(tmp_path, jobs, name="jobs.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"jobs": jobs}))
    return path


def batch(emulator, jobs_file, *args, timeout=300):
    argv = [built_program("mfmodal-engine"), "--jobs", jobs_file, *args]
    return run_program(argv, engine_env(emulator.url), timeout=timeout)


def results(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_200_jobs_bounded_parallelism(emulator, tmp_path):
    emulator.add_fault("max_streams:limit=100")
    jobs = [{"id": f"j{i}", "command": f"echo job {i}; sleep 0.2", "image": IMAGE}
            for i in range(200)]
    out = tmp_path / "results.jsonl"
    result = batch(emulator, write_jobs(tmp_path, jobs), "--max-parallel", "50",
                   "--results", out)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = results(out)
    assert sorted(r["id"] for r in lines) == sorted(f"j{i}" for i in range(200))
    assert all(r["state"] == "DONE" and r["exit_code"] == 0 for r in lines)
    assert all(r["sandbox_id"].startswith("sb-") for r in lines)
    assert all(r["log_bytes"] > 0 and "RUNNING" in r["seconds"] for r in lines)
    state = emulator.state()
    assert 0 < state["max_sandboxes_alive"] <= 50
    assert len(state["sandboxes"]) == 200
    for conn in state["connections"]:
        assert conn["max_streams_open"] <= 100
    relayed = [l for l in result.stdout.splitlines() if l.startswith("[MFLOG|")]
    assert len(relayed) == 200
    assert any("][job j7] job 7" in l for l in relayed)


def test_create_throttling_does_not_fail_jobs(emulator, tmp_path):
    emulator.add_fault("create_rate:limit=20")
    jobs = [{"id": f"j{i}", "command": "true", "image": IMAGE} for i in range(80)]
    out = tmp_path / "results.jsonl"
    result = batch(emulator, write_jobs(tmp_path, jobs), "--max-parallel", "80",
                   "--results", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(results(out)) == 80
    assert "RESOURCE_EXHAUSTED; slowing creates" in result.stderr
    assert "SandboxCreate was throttled" in result.stderr
    calls = emulator.state()["calls"]["SandboxCreate"]
    assert calls.get("RESOURCE_EXHAUSTED", 0) >= 1
    assert calls["OK"] == 80


def test_exit_codes_per_job(emulator, tmp_path):
    codes = {"ok": 0, "one": 1, "retry-veto": 202, "big": 42}
    jobs = [{"id": name, "command": f"exit {code}", "image": IMAGE}
            for name, code in codes.items()]
    out = tmp_path / "results.jsonl"
    result = batch(emulator, write_jobs(tmp_path, jobs), "--results", out)
    assert result.returncode == 1
    got = {r["id"]: r["exit_code"] for r in results(out)}
    assert got == codes
    assert "4 jobs: 1 succeeded, 3 failed" in result.stderr

    ok_only = write_jobs(tmp_path, [{"id": "a", "command": "true", "image": IMAGE}], "ok.json")
    result = batch(emulator, ok_only, "--results", tmp_path / "ok.jsonl")
    assert result.returncode == 0


def test_results_on_stdout_without_file(emulator, tmp_path):
    jobs = [{"id": "a", "command": "true", "image": IMAGE}]
    result = batch(emulator, write_jobs(tmp_path, jobs))
    assert result.returncode == 0
    (line,) = [l for l in result.stdout.splitlines() if l.startswith("{")]
    assert json.loads(line)["id"] == "a"
    assert "\r" not in result.stderr  # no progress line when not on a terminal


def test_fail_fast_stops_others(emulator, tmp_path):
    jobs = [{"id": "bad", "command": "exit 3", "image": IMAGE}] + [
        {"id": f"slow{i}", "command": "sleep 30", "image": IMAGE} for i in range(3)]
    out = tmp_path / "results.jsonl"
    result = batch(emulator, write_jobs(tmp_path, jobs), "--fail-fast", "--results", out)
    assert result.returncode == 1
    lines = {r["id"]: r for r in results(out)}
    assert lines["bad"]["exit_code"] == 3
    assert all(lines[f"slow{i}"]["state"] == "FAILED" for i in range(3))
    assert emulator.state()["sandboxes_alive"] == 0


def test_sigint_terminates_every_sandbox(emulator, tmp_path):
    jobs = [{"id": f"j{i}", "command": "sleep 60", "image": IMAGE} for i in range(100)]
    out = tmp_path / "results.jsonl"
    argv = [str(built_program("mfmodal-engine")), "--jobs", str(write_jobs(tmp_path, jobs)),
            "--max-parallel", "100", "--results", str(out)]
    proc = subprocess.Popen(os.environ.get("MFMODAL_TEST_WRAPPER", "").split() + argv,
                            env=engine_env(emulator.url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while emulator.state()["sandboxes_alive"] < 100 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert emulator.state()["sandboxes_alive"] == 100
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    RECORDED_OUTPUT.append(("mfmodal-engine --jobs", stdout, stderr))
    assert proc.returncode == 130, stderr[-3000:]
    state = emulator.state()
    assert state["sandboxes_alive"] == 0
    assert [sb["terminate_calls"] for sb in state["sandboxes"].values()] == [1] * 100
    lines = results(out)
    assert len(lines) == 100
    assert all(r["exit_code"] == 130 for r in lines)


BAD_INPUTS = [
    ("invalid-json", '{"jobs": [', "invalid JSON"),
    ("not-a-list", '{"jobs": 3}', "$: expected a list of job descriptions"),
    ("unknown-field", '{"jobs": [{"id": "a", "command": "x", "colour": 1}]}',
     "$.jobs[0].colour: unknown field"),
    ("missing-field", '{"jobs": [{"id": "a"}]}', "$.jobs[0].command: missing"),
    ("wrong-type", '{"jobs": [{"id": "a", "command": "x", "memory": "big"}]}',
     "$.jobs[0].memory: expected a number"),
    ("duplicate-id", '[{"id": "a", "command": "x"}, {"id": "a", "command": "y"}]',
     '$[1].id: "a" is already the id of $[0]'),
    ("invalid-gpu", '[{"id": "a", "command": "x", "gpu": "H100:abc"}]',
     '$[0].gpu: invalid GPU "H100:abc"'),
]


@pytest.mark.parametrize("name,text,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_rejected_before_any_call(emulator, tmp_path, name, text, message):
    path = tmp_path / f"{name}.json"
    path.write_text(text)
    result = batch(emulator, path)
    assert result.returncode == 2
    assert message in result.stderr
    assert emulator.state()["calls"] == {}


def test_every_problem_listed(emulator, tmp_path):
    path = tmp_path / "many.json"
    path.write_text('[{"id": "a"}, {"id": "b", "command": "x", "gpu": "A100:0", "cpu": 0}]')
    result = batch(emulator, path)
    assert result.returncode == 2
    for message in ("$[0].command: missing", '$[1].gpu: invalid GPU "A100:0"',
                    "$[1].cpu: expected a positive number"):
        assert message in result.stderr


def test_missing_jobs_file(emulator, tmp_path):
    result = batch(emulator, tmp_path / "nope.json")
    assert result.returncode == 2
    assert "nope.json" in result.stderr
    assert "No such file" in result.stderr
