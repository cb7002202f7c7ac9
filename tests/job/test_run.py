"""mfmodal-engine run against the local Modal emulator: exit statuses,
cancellation, log streams and errors before a sandbox exists."""

import signal
import time

import pytest

from conftest import sandboxes, task_lines

IMAGE = {"registry": "python:3.11-slim"}
TASK = {"flow": "HelloFlow", "run": "7", "step": "train", "task": "3", "attempt": 0}


def job(command, **fields):
    spec = {"id": "j1", "command": command, "image": IMAGE}
    spec.update(fields)
    return spec


def assert_none_alive(emulator):
    state = emulator.state()
    assert state["sandboxes_alive"] == 0, state["sandboxes"]


def test_success_relays_output(emulator, run_job):
    run = run_job(job("echo hello; echo warning >&2; printf 'no newline'",
                      gpu="a10g:2", cpu=2.5, memory=2048, timeout=120,
                      env={"GREETING": "hi"}, task=TASK))
    assert run.finish() == 0, run.stderr
    assert task_lines(run.stdout) == ["hello", "no newline"]
    assert "[MFLOG|0|" in run.stderr
    assert "]warning" in run.stderr
    (sb,) = sandboxes(emulator)
    definition = sb["definition"]
    assert definition["argv"][:2] == ["bash", "-c"]
    assert definition["resources"]["gpu"] == "A10G:2"
    assert definition["resources"]["milli_cpu"] == 2500
    assert definition["resources"]["memory_mb"] == 2048
    assert definition["timeout_secs"] == 120
    assert definition["env_keys"] == ["GREETING"]
    assert sb["name"] == "mf-HelloFlow-7-train-3-0"
    assert sb["tags"]["metaflow.step"] == "train"
    assert sb["terminate_calls"] == 0
    assert "RUNNING -> DRAINING" in run.stderr
    assert_none_alive(emulator)


@pytest.mark.parametrize("code", [1, 3, 202, 203])
def test_exit_status_passes_through(emulator, run_job, code):
    run = run_job(job(f"exit {code}"))
    assert run.finish() == code
    assert f"exited with status {code}" in run.stderr


def test_sandbox_timeout_is_124(emulator, run_job):
    run = run_job(job("echo started; sleep 30", timeout=2))
    assert run.finish() == 124
    assert "timed out after 2 s (Modal TIMEOUT)" in run.stderr
    assert task_lines(run.stdout) == ["started"]
    assert_none_alive(emulator)


def test_job_deadline_terminates(emulator, run_job):
    run = run_job(job("sleep 30", deadline=2, timeout=60))
    assert run.finish() == 124
    assert "deadline of 2 s passed" in run.stderr
    (sb,) = sandboxes(emulator)
    assert sb["terminate_calls"] == 1
    assert_none_alive(emulator)


def test_sigint_during_run(emulator, run_job):
    run = run_job(job("echo one; sleep 0.3; echo two; sleep 30"))
    run.wait_for_log("CREATE -> RUNNING")
    time.sleep(1.0)  # both lines are out; the task then sleeps
    run.signal(signal.SIGINT)
    assert run.finish() == 130
    assert task_lines(run.stdout) == ["one", "two"]
    (sb,) = sandboxes(emulator)
    assert sb["terminate_calls"] == 1
    assert sb["result_status"] == "GENERIC_STATUS_TERMINATED"
    assert_none_alive(emulator)


def test_sigterm_is_143(emulator, run_job):
    run = run_job(job("sleep 30"))
    run.wait_for_log("CREATE -> RUNNING")
    run.signal(signal.SIGTERM)
    assert run.finish() == 143
    (sb,) = sandboxes(emulator)
    assert sb["terminate_calls"] == 1


def test_sigint_twice_skips_flush(emulator, run_job):
    run = run_job(job("sleep 30"))
    run.wait_for_log("CREATE -> RUNNING")
    run.signal(signal.SIGINT)
    run.signal(signal.SIGINT)
    assert run.finish() == 130
    (sb,) = sandboxes(emulator)
    assert sb["terminate_calls"] == 1
    assert_none_alive(emulator)


def test_sigint_during_create_terminates_late_sandbox(emulator, run_job):
    emulator.add_fault("delay:method=SandboxCreate,seconds=2")
    run = run_job(job("sleep 30"))
    run.wait_for_log("RESOLVE -> CREATE")
    run.signal(signal.SIGINT)
    assert run.finish() == 130
    assert "terminating sandbox" in run.stderr
    (sb,) = sandboxes(emulator)
    assert sb["terminate_calls"] == 1
    assert_none_alive(emulator)


def test_log_stream_cut_resumes_without_loss(emulator, run_job):
    emulator.add_fault("log_cut:fd=1,after=100,status=UNAVAILABLE,calls=1")
    emulator.add_fault("log_cut:fd=1,after=100,calls=2")
    # flushed line by line, so the output arrives as many log entries
    run = run_job(job("python3 -u -c 'import time\nfor i in range(1, 5001):\n"
                      "    print(\"line\", i)\n    if i % 10 == 0: time.sleep(0.002)'"))
    assert run.finish() == 0, run.stderr
    assert task_lines(run.stdout) == [f"line {i}" for i in range(1, 5001)]
    calls = emulator.state()["calls"]["SandboxGetLogs"]
    assert sum(calls.values()) >= 4  # stdout was opened at least three times


def test_replayed_batches_stored_once(emulator, run_job):
    emulator.add_fault("log_replay:fd=1,entries=3,calls=2")
    emulator.add_fault("log_cut:fd=1,after=10,calls=1")
    run = run_job(job("for i in $(seq 1 50); do echo line $i; done"))
    assert run.finish() == 0, run.stderr
    assert task_lines(run.stdout) == [f"line {i}" for i in range(1, 51)]


def test_silent_stream_past_its_timeout(emulator, run_job):
    emulator.add_fault("log_stall:fd=1,seconds=8,calls=1")
    run = run_job(job("echo first; sleep 1; echo second"),
                  env_extra={"MFMODAL_LOG_POLL": "1"})
    assert run.finish(timeout=60) == 0, run.stderr
    assert task_lines(run.stdout) == ["first", "second"]


def test_result_before_last_log_batches(emulator, run_job):
    emulator.add_fault("delay:method=SandboxGetLogs,seconds=2")
    run = run_job(job("for i in $(seq 1 20); do echo line $i; done"))
    assert run.finish() == 0, run.stderr
    assert task_lines(run.stdout) == [f"line {i}" for i in range(1, 21)]
    assert "RUNNING -> DRAINING" in run.stderr


def test_missing_secret_fails_before_create(emulator, run_job):
    run = run_job(job("true", secrets=["hf-token"]))
    assert run.finish() == 202  # no retry can make the secret appear
    assert "Modal secret 'hf-token' failed: NOT_FOUND" in run.stderr
    assert "modal secret create hf-token" in run.stderr
    assert "SandboxCreate" not in emulator.state()["calls"]


def test_image_build_failure(emulator, run_job):
    emulator.add_fault("image_fail:match=broken,lines=2,message=pip install failed")
    run = run_job(job("true", image={"registry": "example/broken:1"}))
    assert run.finish() == 202
    assert "image build for registry image example/broken:1" in run.stderr
    assert "pip install failed" in run.stderr
    assert "image build:" in run.stderr  # build log lines are relayed
    assert "SandboxCreate" not in emulator.state()["calls"]


def test_image_build_in_progress_is_joined(emulator, run_job):
    emulator.add_fault("image_stream:match=slow,lines=3,seconds=0.5")
    run = run_job(job("echo ok", image={"registry": "example/slow:1"}))
    assert run.finish() == 0, run.stderr
    assert "is building; waiting for it" in run.stderr
    assert emulator.state()["calls"]["ImageJoinStreaming"]["OK"] >= 1


def test_gpu_type_rejected_by_server(emulator, run_job):
    run = run_job(job("true", gpu="A100-70GB"))
    assert run.finish() == 202
    assert "SandboxCreate failed: INVALID_ARGUMENT" in run.stderr
    assert "A100-70GB" in run.stderr
    assert emulator.state()["sandboxes"] == {}


def test_transient_create_failure_is_retryable(emulator, run_job):
    emulator.add_fault("error:method=SandboxCreate,status=UNAVAILABLE,calls=1-4")
    run = run_job(job("true"))
    assert run.finish() == 1
    assert "SandboxCreate failed: UNAVAILABLE" in run.stderr


def test_invalid_gpu_rejected_locally(emulator, run_job):
    run = run_job(job("true", gpu="A100:0"))
    assert run.finish() == 2
    assert "$.gpu: invalid GPU \"A100:0\"" in run.stderr
    assert emulator.state()["calls"] == {}


def test_invalid_job_lists_every_problem(emulator, run_job):
    run = run_job({"id": "", "cpu": -1, "memory": "lots", "timeout": 1.5,
                   "secrets": ["ok", 3], "colour": "blue",
                   "image": {"registry": "a", "debian_slim": "3.11"}})
    assert run.finish() == 2
    for problem in ("$.id: must not be empty", "$.command: missing; it is required",
                    "$.cpu: expected a positive number of cores, got -1",
                    "$.memory: expected a number",
                    "$.timeout: expected a whole number of seconds",
                    "$.secrets[1]: expected a string", "$.colour: unknown field",
                    "$.image: give exactly one of registry, debian_slim"):
        assert problem in run.stderr
    assert emulator.state()["calls"] == {}


def test_rejected_credentials(tmp_path):
    from mfmodal.emulator.testing import EmulatorProcess
    from enginetest import TEST_TOKEN_ID, built_program, engine_env, run_program

    emu = EmulatorProcess(tmp_path / "emu", tokens={TEST_TOKEN_ID: "as-the-real-one"}).start()
    try:
        job_file = tmp_path / "job.json"
        job_file.write_text('{"id": "j", "command": "true", "image": {"registry": "x"}}')
        result = run_program([built_program("mfmodal-engine"), "run", "--job", job_file],
                             engine_env(emu.url))
        assert result.returncode == 202
        assert "UNAUTHENTICATED" in result.stderr
        assert "check MODAL_TOKEN_ID and MODAL_TOKEN_SECRET" in result.stderr
        assert emu.state()["sandboxes"] == {}
    finally:
        emu.stop()


def test_create_reply_lost_retried_once(emulator, run_job):
    # The server runs the create, then the connection drops before the reply;
    # the retry carries the same idempotency key and gets the same sandbox.
    emulator.add_fault("disconnect:method=SandboxCreate,when=after,calls=1")
    run = run_job(job("echo once", task=TASK))
    assert run.finish() == 0, run.stderr
    assert task_lines(run.stdout) == ["once"]
    assert len(sandboxes(emulator)) == 1


def test_second_create_attaches_by_name(emulator, run_job, tmp_path):
    first = run_job(job("echo first; sleep 3", task=TASK))
    first.wait_for_log("CREATE -> RUNNING")
    second = run_job(job("echo second", task=TASK))
    assert second.finish() == 0, second.stderr
    assert "attached to sandbox" in second.stderr
    assert first.finish() == 0, first.stderr
    (sb,) = sandboxes(emulator)
    assert sb["definition"]["argv"][2] == "echo first; sleep 3"
    calls = emulator.state()["calls"]["SandboxCreate"]
    assert calls.get("ALREADY_EXISTS") == 1
