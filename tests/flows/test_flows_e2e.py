"""Real Metaflow flows with @modal steps, run as subprocesses against the
Modal emulator and moto's S3 server on 127.0.0.1, through mfmodal-engine.

Each test checks what a user sees (exit status, printed output, `logs`, the
Metaflow client) and the emulator's state dump (one sandbox per attempt,
none left running)."""

import hashlib
import os
import signal
import subprocess
import sys

import pytest

from flowtest import (
    TEAM_SECRET_NAME,
    TEAM_TOKEN_VALUE,
    assert_none_running,
    engine_path,
)
from enginetest import RECORDED_OUTPUT
from mfmodal.local.servers import LOCAL_AWS_SECRET_ACCESS_KEY


def task_output(result):
    """Return everything the flow printed, stdout and stderr together."""
    return result.stdout + result.stderr


def test_example_flow_runs_train_on_modal(workspace):
    workspace.add_flow("example_flow")
    run_id, result = workspace.run_flow()

    assert "end: train ran with GPU A10G:1 and computed 55" in result.stdout
    (sandbox,) = workspace.sandboxes(run_id)
    assert sandbox["tags"]["metaflow.step"] == "train"
    assert sandbox["definition"]["resources"]["gpu"] == "A10G:1"
    assert sandbox["definition"]["resources"]["memory_mb"] == 8192
    assert sandbox["definition"]["resources"]["milli_cpu"] == 1000
    assert sandbox["definition"]["timeout_secs"] == 600
    assert sandbox["exit_code"] == 0
    assert sandbox["name"] == "mf-ModalExampleFlow-%s-train-2-0" % run_id
    assert_none_running(workspace.emulator)

    data = workspace.client(
        "run = Run('ModalExampleFlow/%s')\n"
        "task = run['train'].task\n"
        "print(json.dumps({'successful': run.successful, 'gpu': task.data.gpu,\n"
        "  'total': task.data.total, 'sandbox': task.metadata_dict.get('modal-sandbox-id'),\n"
        "  'stdout': task.stdout}))" % run_id)
    assert data["successful"] is True
    assert data["gpu"] == "A10G:1"
    assert data["total"] == 55
    assert data["sandbox"] == sandbox["sandbox_id"]
    assert "train: GPU A10G:1, sum of numbers 55" in data["stdout"]

    logs = workspace.run("logs", "%s/train" % run_id)
    assert logs.returncode == 0, logs.stderr
    assert "train: GPU A10G:1, sum of numbers 55" in logs.stdout
    assert "Task is starting." in logs.stdout


def test_foreach_of_twenty_and_join(workspace):
    workspace.add_flow("foreach_flow")
    run_id, result = workspace.run_flow()

    assert "total of squares: 2470" in result.stdout
    squares = workspace.sandboxes(run_id, "square")
    assert len(squares) == 20
    assert len({sb["tags"]["metaflow.task"] for sb in squares}) == 20
    assert all(sb["exit_code"] == 0 for sb in squares)
    assert all(sb["definition"]["resources"]["milli_cpu"] == 500 for sb in squares)
    assert all(sb["definition"]["resources"]["memory_mb"] == 512 for sb in squares)
    (join,) = workspace.sandboxes(run_id, "join")
    # The join's input paths travel as a variable the sandbox's bash expands.
    assert "METAFLOW_INPUT_PATHS_0" in join["definition"]["env_keys"]
    assert_none_running(workspace.emulator)

    logs = workspace.run("logs", "%s/square" % run_id)
    assert logs.returncode == 0, logs.stderr
    for i in range(20):
        assert "square of %d is %d" % (i, i * i) in logs.stdout

    data = workspace.client(
        "run = Run('ForeachFlow/%s')\n"
        "print(json.dumps({'values': sorted(t.data.value for t in run['square']),\n"
        "  'total': run['join'].task.data.total}))" % run_id)
    assert data["values"] == sorted(i * i for i in range(20))
    assert data["total"] == 2470


def test_retry_runs_a_new_sandbox(workspace):
    workspace.add_flow("retry_flow")
    run_id, result = workspace.run_flow()

    assert "flaky succeeded on attempt 1" in result.stdout
    attempts = workspace.sandboxes(run_id, "flaky")
    assert [sb["tags"]["metaflow.attempt"] for sb in attempts] == ["0", "1"]
    assert attempts[0]["exit_code"] == 1
    assert attempts[1]["exit_code"] == 0
    assert attempts[0]["sandbox_id"] != attempts[1]["sandbox_id"]
    assert_none_running(workspace.emulator)
    assert "attempt 0 fails on purpose" in task_output(result)

    data = workspace.client(
        "task = Run('RetryFlow/%s')['flaky'].task\n"
        "print(json.dumps({'attempt': task.data.attempt, 'current': task.current_attempt}))"
        % run_id)
    assert data == {"attempt": 1, "current": 1}


def test_sandbox_timeout_fails_the_step(workspace):
    workspace.add_flow("timeout_flow")
    run_id, result = workspace.run_flow(expect_status=1)

    (sandbox,) = workspace.sandboxes(run_id, "slow")
    assert sandbox["definition"]["timeout_secs"] == 8
    assert sandbox["result_status"] == "GENERIC_STATUS_TIMEOUT"
    assert "timed out after 8 s (Modal TIMEOUT)" in task_output(result)
    assert "slow step started" in result.stdout
    assert_none_running(workspace.emulator)


def test_catch_records_failed_modal_steps(workspace):
    workspace.add_flow("catch_flow")
    run_id, result = workspace.run_flow()

    assert "fragile caught: builtins.ValueError: fragile step fails on purpose" in result.stdout
    assert "doomed caught: metaflow.plugins.catch_decorator.FailureHandledByCatch" in result.stdout
    # fragile's exception was caught in its sandbox, so attempt 0 succeeded.
    (fragile,) = workspace.sandboxes(run_id, "fragile")
    assert fragile["exit_code"] == 0
    # doomed's sandbox timed out; the fallback attempt 1 ran locally.
    (doomed,) = workspace.sandboxes(run_id, "doomed")
    assert doomed["tags"]["metaflow.attempt"] == "0"
    assert doomed["result_status"] == "GENERIC_STATUS_TIMEOUT"
    assert "Task fallback is starting to handle the failure." in task_output(result)
    assert_none_running(workspace.emulator)


def test_secret_environment_and_env_reach_the_task(workspace):
    workspace.add_flow("environment_flow")
    run_id, result = workspace.run_flow()

    (sandbox,) = workspace.sandboxes(run_id, "read")
    assert TEAM_SECRET_NAME in sandbox["definition"]["secret_names"]
    data = workspace.client(
        "task = Run('EnvironmentFlow/%s')['read'].task\n"
        "print(json.dumps({'sha': task.data.token_sha256,\n"
        "  'environment': task.data.from_environment, 'decorator': task.data.from_decorator}))"
        % run_id)
    assert data["sha"] == hashlib.sha256(TEAM_TOKEN_VALUE.encode()).hexdigest()
    assert data["environment"] == "environment-value"
    assert data["decorator"] == "decorator-value"
    assert "token length %d" % len(TEAM_TOKEN_VALUE) in result.stdout
    for _, out, err in RECORDED_OUTPUT:
        assert TEAM_TOKEN_VALUE not in out
        assert TEAM_TOKEN_VALUE not in err


def test_resume_reruns_the_failed_modal_step(workspace):
    workspace.add_flow("resume_flow")
    first_id, first = workspace.run_flow(env={"FAIL_TRAIN": "1"}, expect_status=1)
    assert "train fails on purpose" in task_output(first)
    assert [sb["tags"]["metaflow.step"] for sb in workspace.sandboxes(first_id)] == [
        "start", "train"]

    resumed_id, resumed = workspace.run_flow("resume", "--origin-run-id", first_id)
    assert "result: 42" in resumed.stdout
    # start is cloned from the first run, so only train gets a new sandbox.
    assert [sb["tags"]["metaflow.step"] for sb in workspace.sandboxes(resumed_id)] == ["train"]
    assert_none_running(workspace.emulator)
    data = workspace.client(
        "print(json.dumps(Run('ResumeFlow/%s')['train'].task.data.result))" % resumed_id)
    assert data == 42


def test_with_modal_sends_every_step(workspace):
    workspace.add_flow("plain_flow")
    run_id, result = workspace.run_flow("run", "--with", "modal:gpu=t4")

    assert "end ran with GPU T4:1" in result.stdout
    sandboxes = workspace.sandboxes(run_id)
    assert [sb["tags"]["metaflow.step"] for sb in sandboxes] == ["start", "end"]
    assert all(sb["definition"]["resources"]["gpu"] == "T4:1" for sb in sandboxes)
    assert_none_running(workspace.emulator)


def test_forwarded_credentials_stay_secret(workspace):
    workspace.add_flow("plain_flow")
    env = {"METAFLOW_MODAL_FORWARD_AWS_CREDENTIALS": "1", "METAFLOW_MODAL_SECRETS": ""}
    run_id, result = workspace.run_flow("run", "--with", "modal", env=env)

    for sandbox in workspace.sandboxes(run_id):
        assert sandbox["definition"]["secret_names"] == [None]
        assert "AWS_SECRET_ACCESS_KEY" in sandbox["definition"]["env_keys"]
    assert LOCAL_AWS_SECRET_ACCESS_KEY not in result.stdout + result.stderr
    argv_text = " ".join(" ".join(sb["definition"]["argv"]) for sb in workspace.sandboxes(run_id))
    assert LOCAL_AWS_SECRET_ACCESS_KEY not in argv_text


def test_interrupt_terminates_the_sandbox(workspace):
    workspace.add_flow("sleep_flow")
    flow = workspace.start("run")
    try:
        sandbox = workspace.wait_for_sandbox("SleepFlow", "wait")
        # Ctrl-C in a terminal sends SIGINT to the whole process group.
        os.killpg(flow.pid, signal.SIGINT)
        out, err = flow.communicate(timeout=60)
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGKILL)
            flow.wait()
    RECORDED_OUTPUT.append(("sleep_flow.py run", out, err))

    assert flow.returncode != 0
    record = workspace.emulator.state()["sandboxes"][sandbox["sandbox_id"]]
    assert record["terminate_calls"] >= 1
    assert record["result_status"] == "GENERIC_STATUS_TERMINATED"
    assert_none_running(workspace.emulator)


def test_local_datastore_is_rejected(workspace):
    workspace.add_flow("plain_flow")
    result = workspace.run("--datastore=local", "run", "--with", "modal")

    assert result.returncode != 0
    assert "needs the S3 datastore" in result.stderr + result.stdout
    assert "--datastore=s3" in result.stderr + result.stdout


def test_missing_engine_is_reported(workspace):
    workspace.add_flow("plain_flow")
    before = len(workspace.emulator.state()["sandboxes"])
    result = workspace.run("run", "--with", "modal",
                           env={"MFMODAL_ENGINE": str(workspace.root / "no-such-engine")})

    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert "no-such-engine, which is not an executable file" in output
    # The check runs before the first task, so nothing reached Modal.
    assert len(workspace.emulator.state()["sandboxes"]) == before


def test_mfmodal_local_example(tmp_path):
    env = dict(os.environ, MFMODAL_ENGINE=engine_path())
    argv = [sys.executable, "-m", "mfmodal.local", "--state-dir", str(tmp_path / "state"), "example"]
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    RECORDED_OUTPUT.append((" ".join(argv), result.stdout, result.stderr))

    assert result.returncode == 0, result.stderr[-8000:]
    assert "end: train ran with GPU A10G:1 and computed 55" in result.stdout
    assert "finished with exit status 0" in result.stdout
    run_id = (tmp_path / "state" / "last-run-id").read_text().strip()
    run_dir = tmp_path / "state" / "s3" / "objects" / "metaflow" / "ModalExampleFlow" / run_id
    assert (run_dir / "train" / "2" / "0.data.json").is_file()
    assert (run_dir / "train" / "2" / "0.task_stdout.log").is_file()
