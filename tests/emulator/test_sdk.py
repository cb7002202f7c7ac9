"""Modal's official Python SDK against the emulator.

Each scenario runs in a subprocess: the SDK caches its client and config per
process, and a test must be able to point it at different emulators and tokens.
A scenario prints one JSON object, and the tests assert on its fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any, Dict

import pytest

SDK_TIMEOUT_SECONDS = 90

MAIN_SCENARIO = r'''
import json, time
import modal
from modal.exception import ImageBuildError, NotFoundError, SandboxTerminatedError, SandboxTimeoutError

out = {}
app = modal.App.lookup("sdk-app", create_if_missing=True)
out["app_id"] = app.app_id
try:
    modal.App.lookup("sdk-missing-app")
    out["missing_app"] = None
except NotFoundError as exc:
    out["missing_app"] = str(exc)

secret = modal.Secret.from_name("hf-token", required_keys=["HF_TOKEN"])
secret.hydrate()
out["secret_id"] = secret.object_id
try:
    modal.Secret.from_name("no-such-secret").hydrate()
    out["missing_secret"] = None
except NotFoundError as exc:
    out["missing_secret"] = str(exc)

print_env = ("import json, os, sys; print(json.dumps({k: v for k, v in os.environ.items() "
             "if k.startswith(('MODAL_', 'FOO', 'HF_', 'SHARED'))})); print('to stderr', file=sys.stderr)")
sb = modal.Sandbox.create("python", "-c", print_env, app=app, image=modal.Image.from_registry("python:3.11-slim"),
                          gpu="A100:4", cpu=2.5, memory=2048, timeout=60, env={"FOO": "bar"}, secrets=[secret])
out["env"] = {"id": sb.object_id, "stdout": sb.stdout.read(), "stderr": sb.stderr.read()}
sb.wait()
out["env"]["returncode"] = sb.returncode

lines = modal.Sandbox.create("bash", "-c", "for i in 1 2 3; do echo line$i; sleep 0.1; done", app=app,
                             image=modal.Image.debian_slim())
out["lines"] = list(lines.stdout)
lines.wait()

failing = modal.Sandbox.create("bash", "-c", "echo failing >&2; exit 1", app=app)
failing.wait()
out["failure"] = {"returncode": failing.returncode, "stderr": failing.stderr.read()}

slow = modal.Sandbox.create("sleep", "30", app=app, timeout=2)
started = time.monotonic()
try:
    slow.wait()
    raised = None
except SandboxTimeoutError as exc:
    raised = type(exc).__name__
out["timeout"] = {"raised": raised, "returncode": slow.returncode, "elapsed": time.monotonic() - started}

named = modal.Sandbox.create("sleep", "30", app=app, name="sdk-named")
out["poll_running"] = named.poll()
out["from_name"] = modal.Sandbox.from_name("sdk-app", "sdk-named").object_id == named.object_id
out["listed"] = named.object_id in [s.object_id for s in modal.Sandbox.list(app_id=app.app_id)]
named.terminate()
try:
    named.wait()
    raised = None
except SandboxTerminatedError as exc:
    raised = type(exc).__name__
out["terminate"] = {"id": named.object_id, "raised": raised, "returncode": named.returncode}

waited = modal.Sandbox.create("sleep", "30", app=app)
out["terminate_wait"] = waited.terminate(wait=True)

streamed = modal.Sandbox.create("true", app=app, image=modal.Image.from_registry("sdk-streamed:1"))
streamed.wait()
out["streamed_image"] = streamed.returncode
try:
    modal.Sandbox.create("true", app=app, image=modal.Image.from_registry("sdk-broken:1"))
    out["broken_image"] = None
except ImageBuildError as exc:
    out["broken_image"] = str(exc)

print(json.dumps(out))
'''

LOOKUP_SCENARIO = r'''
import json, modal
from modal.exception import AuthError
try:
    print(json.dumps({"app_id": modal.App.lookup("sdk-auth", create_if_missing=True).app_id}))
except AuthError as exc:
    print(json.dumps({"auth_error": str(exc)}))
'''


def run_scenario(emulator, script: str, **env_options: Any) -> Dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=emulator.sdk_env(**env_options),
                            capture_output=True, text=True, timeout=SDK_TIMEOUT_SECONDS)
    assert result.returncode == 0, f"SDK scenario failed:\n{result.stderr[-5000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def main_run(shared_emulator):
    shared_emulator.clear_faults()
    shared_emulator.add_fault("image_stream:match=sdk-streamed,lines=3,seconds=0.2")
    shared_emulator.add_fault("image_fail:match=sdk-broken,message=pull access denied for sdk-broken")
    try:
        return run_scenario(shared_emulator, MAIN_SCENARIO), shared_emulator.state()
    finally:
        shared_emulator.clear_faults()


def test_sdk_app_lookup(main_run):
    out, state = main_run
    assert out["app_id"] in state["apps"]
    assert state["apps"][out["app_id"]]["name"] == "sdk-app"
    assert "sdk-missing-app" in out["missing_app"]


def test_sdk_secret_from_name(main_run):
    out, state = main_run
    assert state["secrets"][out["secret_id"]]["name"] == "hf-token"
    assert "no-such-secret" in out["missing_secret"]


def test_sdk_sandbox_resources_env_and_secrets(main_run):
    out, state = main_run
    env = json.loads(out["env"]["stdout"])
    assert env["MODAL_GPU"] == "A100:4"
    assert env["MODAL_CPU"] == "2.5"
    assert env["MODAL_MEMORY"] == "2048"
    assert env["MODAL_SANDBOX_ID"] == out["env"]["id"]
    assert env["FOO"] == "bar"
    assert env["HF_TOKEN"] == "hf_test_value"
    assert "MODAL_IS_REMOTE" not in env
    assert out["env"]["stderr"] == "to stderr\n"
    assert out["env"]["returncode"] == 0

    definition = state["sandboxes"][out["env"]["id"]]["definition"]
    assert definition["resources"] == {"milli_cpu": 2500, "milli_cpu_max": 0, "memory_mb": 2048,
                                       "memory_mb_max": 0, "gpu": "A100:4"}
    assert definition["timeout_secs"] == 60
    assert definition["secret_names"] == ["hf-token", None]
    assert definition["env_keys"] == ["HF_TOKEN", "SHARED", "FOO"]
    assert definition["image"][-1]["dockerfile_commands"] == ["FROM python:3.11-slim"]


def test_sdk_debian_slim_image_recorded(main_run):
    out, state = main_run
    commands = [record["definition"]["dockerfile_commands"] for record in state["images"].values()]
    slim = [c for c in commands if c and c[0].startswith("FROM python:3.11") and "slim-bookworm" in c[0]]
    assert slim, commands
    assert any(command.startswith("RUN apt-get") for command in slim[0])


def test_sdk_reads_stdout_by_line(main_run):
    out, _ = main_run
    assert out["lines"] == ["line1\n", "line2\n", "line3\n"]


def test_sdk_exit_code_one(main_run):
    out, _ = main_run
    assert out["failure"] == {"returncode": 1, "stderr": "failing\n"}


def test_sdk_timeout_error_and_124(main_run):
    out, _ = main_run
    assert out["timeout"]["raised"] == "SandboxTimeoutError"
    assert out["timeout"]["returncode"] == 124
    assert out["timeout"]["elapsed"] < 10


def test_sdk_terminate_and_137(main_run):
    out, state = main_run
    assert out["poll_running"] is None
    assert out["from_name"] is True
    assert out["listed"] is True
    assert out["terminate"]["raised"] == "SandboxTerminatedError"
    assert out["terminate"]["returncode"] == 137
    assert out["terminate_wait"] == 137
    assert state["sandboxes"][out["terminate"]["id"]]["terminate_calls"] == 1


def test_sdk_image_build_streamed_and_failed(main_run):
    out, state = main_run
    assert out["streamed_image"] == 0
    assert "pull access denied for sdk-broken" in out["broken_image"]
    assert state["calls"]["ImageJoinStreaming"]["OK"] >= 2


def test_sdk_bad_token_raises_auth_error(start_emulator):
    emulator = start_emulator(tokens={"ak-right": "as-right"})
    rejected = run_scenario(emulator, LOOKUP_SCENARIO, token_id="ak-right", token_secret="as-wrong")
    accepted = run_scenario(emulator, LOOKUP_SCENARIO, token_id="ak-right", token_secret="as-right")
    assert "invalid token" in rejected["auth_error"]
    assert "as-wrong" not in rejected["auth_error"]
    assert accepted["app_id"].startswith("ap-")
    assert emulator.state()["calls"]["AppGetOrCreate"] == {"UNAUTHENTICATED": 1, "OK": 1}


def test_sdk_follows_retry_policy_and_retries(start_emulator):
    emulator = start_emulator(faults=[
        "error:method=AppGetOrCreate,calls=1,status=RESOURCE_EXHAUSTED,retry_after=0.5,message=slow down",
        "error:method=AppGetOrCreate,calls=2,status=UNAVAILABLE",
    ])
    started = time.monotonic()
    out = run_scenario(emulator, LOOKUP_SCENARIO)
    elapsed = time.monotonic() - started
    assert out["app_id"].startswith("ap-")
    assert elapsed >= 0.5
    assert emulator.state()["calls"]["AppGetOrCreate"] == {"RESOURCE_EXHAUSTED": 1, "UNAVAILABLE": 1, "OK": 1}
    keys = {call["metadata"]["x-idempotency-key"] for call in emulator.state()["recent_calls"]
            if call["method"] == "AppGetOrCreate"}
    assert len(keys) == 1
