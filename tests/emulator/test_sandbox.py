"""Sandbox RPCs through a raw grpclib client: create, environment, wait, terminate, list, stdin."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from emulator_client import Client, run, wait_exited

GenericResult = api_pb2.GenericResult


async def expect_error(awaitable) -> GRPCError:
    try:
        await awaitable
    except GRPCError as exc:
        return exc
    raise AssertionError("the call succeeded but an error status was expected")


def gpu(name: str, count: int = 1) -> api_pb2.Resources:
    return api_pb2.Resources(gpu_config=api_pb2.GPUConfig(gpu_type=name, count=count))


def test_sandbox_ids_have_v1_shape(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("true")
            task = await client.call("SandboxGetTaskId", api_pb2.SandboxGetTaskIdRequest(sandbox_id=sandbox_id))
            return sandbox_id, task

    sandbox_id, task = run(scenario())
    assert re.fullmatch(r"sb-[0-9A-Za-z]{22}", sandbox_id)
    assert re.fullmatch(r"ta-[0-9A-Za-z]{22}", task.task_id)


def test_sandbox_exit_codes(emulator):
    cases = {
        "success": (["true"], GenericResult.GENERIC_STATUS_SUCCESS, 0),
        "failure": (["bash", "-c", "exit 3"], GenericResult.GENERIC_STATUS_FAILURE, 3),
        "signal": (["bash", "-c", "kill -TERM $$"], GenericResult.GENERIC_STATUS_FAILURE, 143),
        "missing": (["/nonexistent/command"], GenericResult.GENERIC_STATUS_FAILURE, 127),
    }

    async def scenario():
        results = {}
        async with Client(emulator.url) as client:
            for name, (argv, _, _) in cases.items():
                sandbox_id = await client.sandbox(*argv)
                results[name] = (await client.wait_finished(sandbox_id), sandbox_id)
            missing_stderr, _ = await client.read_all_logs(results["missing"][1], fd=2)
        return results, missing_stderr

    results, missing_stderr = run(scenario())
    for name, (_, status, exitcode) in cases.items():
        result = results[name][0]
        assert (name, result.status, result.exitcode) == (name, status, exitcode)
    assert "/nonexistent/command" in missing_stderr


def test_sandbox_environment_and_secrets(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            hf = await client.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(deployment_name="hf-token"))
            other = await client.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(deployment_name="other"))
            env_secret = await client.env_secret(app_id, {"FOO": "bar", "SHARED": "from-env"})
            resources = api_pb2.Resources(milli_cpu=2500, memory_mb=3072,
                                          gpu_config=api_pb2.GPUConfig(gpu_type="A100", count=4))
            sandbox_id = await client.sandbox(
                "python", "-c", "import json, os, sys; print(json.dumps(dict(os.environ))); print(sys.executable)",
                app_id=app_id, resources=resources,
                secret_ids=[hf.secret_id, other.secret_id, env_secret])
            await client.wait_finished(sandbox_id)
            text, _ = await client.read_all_logs(sandbox_id)
            return sandbox_id, text, (hf.secret_id, other.secret_id, env_secret)

    sandbox_id, text, secret_ids = run(scenario())
    env_line, executable = text.strip().splitlines()
    env = json.loads(env_line)
    assert env["MODAL_GPU"] == "A100:4"
    assert env["MODAL_CPU"] == "2.5"
    assert env["MODAL_MEMORY"] == "3072"
    assert env["MODAL_SANDBOX_ID"] == sandbox_id
    assert env["MODAL_TASK_ID"].startswith("ta-")
    assert "MODAL_IS_REMOTE" not in env
    assert env["HF_TOKEN"] == "hf_test_value"
    assert env["OTHER"] == "1"
    assert env["FOO"] == "bar"
    assert env["SHARED"] == "from-env"  # later secrets win
    assert env["LANG"] == "C.UTF-8"
    assert env["HOME"].endswith(os.path.join(sandbox_id, "home"))
    assert os.path.isdir(env["TMPDIR"])
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert os.path.dirname(executable) == os.path.dirname(sys.executable)

    record = emulator.state()["sandboxes"][sandbox_id]
    assert record["definition"]["secret_ids"] == list(secret_ids)
    assert record["definition"]["secret_names"] == ["hf-token", "other", None]
    assert record["definition"]["env_keys"] == ["HF_TOKEN", "SHARED", "OTHER", "FOO"]
    assert record["definition"]["resources"] == {"milli_cpu": 2500, "milli_cpu_max": 0, "memory_mb": 3072,
                                                 "memory_mb_max": 0, "gpu": "A100:4"}
    assert "hf_test_value" not in str(emulator.state())


def test_sandbox_no_gpu_leaves_variables_empty(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", 'echo "[$MODAL_GPU][$MODAL_CPU][$MODAL_MEMORY]"')
            await client.wait_finished(sandbox_id)
            return await client.read_all_logs(sandbox_id)

    text, _ = run(scenario())
    assert text == "[][][]\n"


@pytest.mark.parametrize("gpu_type,count,expected", [
    ("a100-80gb", 8, "A100-80GB:8"),
    ("H100!", 1, "H100!:1"),
    ("b200+", 2, "B200+:2"),
    ("rtx-pro-6000", 1, "RTX-PRO-6000:1"),
    ("T4", 1, "T4:1"),
    ("A10", 4, "A10:4"),
])
def test_sandbox_gpu_accepted(emulator, gpu_type, count, expected):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "echo -n $MODAL_GPU", resources=gpu(gpu_type, count))
            await client.wait_finished(sandbox_id)
            return sandbox_id, await client.read_all_logs(sandbox_id)

    sandbox_id, (text, _) = run(scenario())
    assert text == expected
    assert emulator.state()["sandboxes"][sandbox_id]["definition"]["resources"]["gpu"] == expected


@pytest.mark.parametrize("gpu_type,count,fragment", [
    ("A100-70GB", 1, 'invalid GPU type "A100-70GB": expected one of T4'),
    ("A10G!", 1, 'invalid GPU type "A10G!"'),
    ("T4", 0, "invalid GPU count 0 for T4: expected 1 to 8"),
    ("H100", 9, "invalid GPU count 9 for H100: expected 1 to 8"),
    ("A10G", 5, "invalid GPU count 5 for A10G: expected 1 to 4"),
])
def test_sandbox_gpu_rejected(emulator, gpu_type, count, fragment):
    before = len(emulator.state()["sandboxes"])

    async def scenario():
        async with Client(emulator.url) as client:
            return await expect_error(client.sandbox("true", resources=gpu(gpu_type, count)))

    error = run(scenario())
    assert error.status == Status.INVALID_ARGUMENT
    assert fragment in error.message
    assert len(emulator.state()["sandboxes"]) == before


def test_sandbox_name_conflict_while_running(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app("names")
            first = await client.sandbox("sleep", "30", app_id=app_id, name="job-1")
            conflict = await expect_error(client.sandbox("true", app_id=app_id, name="job-1"))
            other_app = await client.sandbox("true", app_id=await client.app("names-2"), name="job-1")
            await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=first))
            again = await client.sandbox("true", app_id=app_id, name="job-1")
            return first, conflict, other_app, again

    first, conflict, other_app, again = run(scenario())
    assert conflict.status == Status.ALREADY_EXISTS
    assert "job-1" in conflict.message
    assert len({first, other_app, again}) == 3


def test_sandbox_idempotency_key_returns_same_sandbox(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            image_id = await client.image(app_id)
            key = client.md(x_idempotency_key="key-123")
            first = await client.sandbox("sleep", "30", app_id=app_id, image_id=image_id, metadata=key)
            second = await client.sandbox("sleep", "30", app_id=app_id, image_id=image_id, metadata=key)
            concurrent_key = client.md(x_idempotency_key="key-456")
            concurrent = await asyncio.gather(*[
                client.sandbox("sleep", "30", app_id=app_id, image_id=image_id, metadata=concurrent_key)
                for _ in range(3)])
            other = await client.sandbox("sleep", "30", app_id=app_id, image_id=image_id,
                                         metadata=client.md(x_idempotency_key="key-789"))
            for sandbox_id in {first, other, *concurrent}:
                await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=sandbox_id))
            return first, second, concurrent, other

    first, second, concurrent, other = run(scenario())
    assert first == second
    assert len(set(concurrent)) == 1
    assert other not in (first, concurrent[0])
    keys = [record["idempotency_key"] for record in emulator.state()["sandboxes"].values()]
    assert keys.count("key-123") == 1
    assert keys.count("key-456") == 1


def test_sandbox_timeout_kills_and_reports_timeout(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            started = time.monotonic()
            sandbox_id = await client.sandbox("bash", "-c", "echo $$; sleep 30", timeout_secs=1)
            result = await client.wait_finished(sandbox_id)
            return sandbox_id, result, time.monotonic() - started

    sandbox_id, result, elapsed = run(scenario())
    assert result.status == GenericResult.GENERIC_STATUS_TIMEOUT
    assert result.exitcode == 124
    assert 0.9 <= elapsed < 8.0
    record = emulator.state()["sandboxes"][sandbox_id]
    assert record["result_status"] == "GENERIC_STATUS_TIMEOUT"
    assert record["definition"]["effective_timeout_secs"] == 1
    assert wait_exited(record["pid"])


def test_sandbox_zero_timeout_means_300_seconds(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("true", timeout_secs=0)
            await client.wait_finished(sandbox_id)
            return sandbox_id

    sandbox_id = run(scenario())
    definition = emulator.state()["sandboxes"][sandbox_id]["definition"]
    assert definition["timeout_secs"] == 0
    assert definition["effective_timeout_secs"] == 300


def test_sandbox_wait_long_polls_without_result(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "sleep 3; exit 4")
            started = time.monotonic()
            running = await client.wait(sandbox_id, timeout=0.3)
            poll_elapsed = time.monotonic() - started
            started = time.monotonic()
            poll = await client.wait(sandbox_id, timeout=0)
            zero_elapsed = time.monotonic() - started
            finished = await client.wait(sandbox_id, timeout=10)
            return running, poll_elapsed, poll, zero_elapsed, finished

    running, poll_elapsed, poll, zero_elapsed, finished = run(scenario())
    assert not running.HasField("result")
    assert running.metadata.app_id.startswith("ap-")
    assert 0.25 <= poll_elapsed < 2.0
    assert not poll.HasField("result")
    assert zero_elapsed < 1.0
    assert finished.result.status == GenericResult.GENERIC_STATUS_FAILURE
    assert finished.result.exitcode == 4
    assert finished.metadata.result.exitcode == 4


def test_sandbox_terminate_is_idempotent_and_kills_group(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "sleep 60 & echo $!; wait")
            batches, _ = await client.log_batches(sandbox_id, timeout=2)
            child_pid = int("".join(item.data for b in batches for item in b.items).split()[0])
            first = await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=sandbox_id))
            second = await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=sandbox_id))
            result = await client.wait_finished(sandbox_id)
            return sandbox_id, child_pid, first, second, result

    sandbox_id, child_pid, first, second, result = run(scenario())
    assert not first.HasField("existing_result")
    assert second.existing_result.status == GenericResult.GENERIC_STATUS_TERMINATED
    assert result.status == GenericResult.GENERIC_STATUS_TERMINATED
    assert result.exitcode == 137
    record = emulator.state()["sandboxes"][sandbox_id]
    assert record["terminate_calls"] == 2
    assert wait_exited(record["pid"])
    assert wait_exited(child_pid)


def test_sandbox_exit_kills_background_children(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            started = time.monotonic()
            sandbox_id = await client.sandbox("bash", "-c", "sleep 60 & echo $!")
            result = await client.wait_finished(sandbox_id)
            text, _ = await client.read_all_logs(sandbox_id)
            return result, int(text.split()[0]), time.monotonic() - started

    result, child_pid, elapsed = run(scenario())
    assert result.status == GenericResult.GENERIC_STATUS_SUCCESS
    assert elapsed < 5.0
    assert wait_exited(child_pid)


def test_sandbox_workdir(emulator, tmp_path):
    workdir = tmp_path / "deep" / "work"

    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("pwd", workdir=str(workdir))
            await client.wait_finished(sandbox_id)
            text, _ = await client.read_all_logs(sandbox_id)
            relative = await expect_error(client.sandbox("pwd", workdir="relative/dir"))
            return text, relative

    text, relative = run(scenario())
    assert text.strip() == str(workdir)
    assert workdir.is_dir()
    assert relative.status == Status.INVALID_ARGUMENT
    assert "definition.workdir" in relative.message


def test_sandbox_default_command_from_image_cmd(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            image_id = await client.image(app_id, ["FROM python:3.11-slim", 'CMD ["echo", "from-cmd"]'])
            sandbox_id = await client.sandbox(app_id=app_id, image_id=image_id)
            await client.wait_finished(sandbox_id)
            return await client.read_all_logs(sandbox_id)

    text, _ = run(scenario())
    assert text == "from-cmd\n"


def test_sandbox_stdin_write(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("cat")
            for index, data, eof in ((1, b"hello ", False), (1, b"hello ", False), (2, b"world\n", False),
                                     (3, b"", True)):
                await client.call("SandboxStdinWrite", api_pb2.SandboxStdinWriteRequest(
                    sandbox_id=sandbox_id, input=data, index=index, eof=eof))
            result = await client.wait_finished(sandbox_id)
            text, _ = await client.read_all_logs(sandbox_id)
            late = await expect_error(client.call("SandboxStdinWrite", api_pb2.SandboxStdinWriteRequest(
                sandbox_id=sandbox_id, input=b"x", index=4)))
            return result, text, late

    result, text, late = run(scenario())
    assert result.status == GenericResult.GENERIC_STATUS_SUCCESS
    assert text == "hello world\n"
    assert late.status == Status.FAILED_PRECONDITION


def test_sandbox_task_id_and_result(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "sleep 0.3; exit 7")
            request = api_pb2.SandboxGetTaskIdRequest(sandbox_id=sandbox_id)
            running = await client.call("SandboxGetTaskId", request)
            await client.wait_finished(sandbox_id)
            finished = await client.call("SandboxGetTaskId", request)
            return running, finished

    running, finished = run(scenario())
    assert running.task_id.startswith("ta-")
    assert not running.HasField("task_result")
    assert finished.task_id == running.task_id
    assert finished.task_result.exitcode == 7


def test_sandbox_get_from_name(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app("lookup-app")
            sandbox_id = await client.sandbox("sleep", "30", app_id=app_id, name="worker")
            found = await client.call("SandboxGetFromName", api_pb2.SandboxGetFromNameRequest(
                sandbox_name="worker", app_name="lookup-app"))
            await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=sandbox_id))
            after_terminate = await expect_error(client.call("SandboxGetFromName", api_pb2.SandboxGetFromNameRequest(
                sandbox_name="worker", app_name="lookup-app")))
            terminated = await client.call("SandboxGetFromName", api_pb2.SandboxGetFromNameRequest(
                sandbox_name="worker", app_name="lookup-app", include_terminated=True))
            return sandbox_id, found, after_terminate, terminated

    sandbox_id, found, after_terminate, terminated = run(scenario())
    assert found.sandbox_id == sandbox_id
    assert after_terminate.status == Status.NOT_FOUND
    assert terminated.sandbox_id == sandbox_id
    assert terminated.metadata.result.status == GenericResult.GENERIC_STATUS_TERMINATED


def test_sandbox_list_pages_and_filters(start_emulator):
    emulator = start_emulator(extra_args=["--list-page-size", "2"])

    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app("listing")
            image_id = await client.image(app_id)
            ids = []
            for index in range(5):
                ids.append(await client.sandbox("sleep", "30", app_id=app_id, image_id=image_id,
                                                tags={"job": "a" if index % 2 == 0 else "b"}))
            await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=ids[0]))

            async def list_all(**filters):
                seen, before, pages = [], 0.0, 0
                while True:
                    response = await client.call("SandboxList", api_pb2.SandboxListRequest(
                        app_id=app_id, before_timestamp=before, **filters))
                    if not response.sandboxes:
                        return seen, pages
                    pages += 1
                    seen.extend(info.id for info in response.sandboxes)
                    before = response.sandboxes[-1].created_at

            running, pages = await list_all()
            everything, _ = await list_all(include_finished=True)
            tagged, _ = await list_all(include_finished=True, tags=[api_pb2.SandboxTag(tag_name="job", tag_value="a")])
            return ids, running, pages, everything, tagged

    ids, running, pages, everything, tagged = run(scenario())
    assert running == list(reversed(ids[1:]))
    assert pages == 2
    assert everything == list(reversed(ids))
    assert tagged == [ids[4], ids[2], ids[0]]


def test_sandbox_max_alive_counted(start_emulator):
    emulator = start_emulator()

    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            image_id = await client.image(app_id)
            ids = await asyncio.gather(*[client.sandbox("sleep", "30", app_id=app_id, image_id=image_id)
                                         for _ in range(3)])
            alive = emulator.state()["sandboxes_alive"]
            for sandbox_id in ids:
                await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=sandbox_id))
            await client.sandbox("true", app_id=app_id, image_id=image_id)
            return alive

    alive = run(scenario())
    state = emulator.state()
    assert alive == 3
    assert state["max_sandboxes_alive"] == 3


def test_sandbox_followed_in_state_file(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "sleep 0.5; exit 2", name="followed",
                                              tags={"team": "ml"}, resources=gpu("L4", 2))
            running = emulator.state_file()["sandboxes"][sandbox_id]
            await client.wait_finished(sandbox_id)
            finished = emulator.state_file()["sandboxes"][sandbox_id]
            return running, finished

    running, finished = run(scenario())
    assert running["status"] == "running"
    assert running["pid"] > 0
    assert running["exit_code"] is None
    assert running["definition"]["argv"] == ["bash", "-c", "sleep 0.5; exit 2"]
    assert running["definition"]["name"] == "followed"
    assert running["definition"]["tags"] == {"team": "ml"}
    assert running["definition"]["image"][0]["registry_tag"] == "python:3.11-slim"
    assert running["definition"]["resources"]["gpu"] == "L4:2"
    assert finished["status"] == "finished"
    assert finished["exit_code"] == 2
    assert finished["result_status"] == "GENERIC_STATUS_FAILURE"
    assert finished["finished_at"] >= finished["created_at"]
    calls = emulator.state_file()["calls"]
    assert calls["SandboxCreate"]["OK"] >= 1
    assert calls["SandboxWait"]["OK"] >= 1


def test_sandbox_create_rejects_bad_requests(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            image_id = await client.image(app_id)

            def create(**fields):
                definition = {"entrypoint_args": ["true"], "image_id": image_id, "timeout_secs": 10}
                definition.update(fields.pop("definition", {}))
                request = api_pb2.SandboxCreateRequest(app_id=fields.pop("app_id", app_id),
                                                       definition=api_pb2.Sandbox(**definition))
                return expect_error(client.call("SandboxCreate", request))

            return {
                "missing app": await create(app_id=""),
                "unknown app": await create(app_id="ap-unknown"),
                "missing image": await create(definition={"image_id": ""}),
                "unknown image": await create(definition={"image_id": "im-unknown"}),
                "unknown secret": await create(definition={"secret_ids": ["st-unknown"]}),
                "long timeout": await create(definition={"timeout_secs": 90000}),
                "nul argument": await create(definition={"entrypoint_args": ["echo", "a\0b"]}),
                "wait unknown": await expect_error(client.wait("sb-" + "0" * 22, timeout=0)),
                "wait missing": await expect_error(client.wait("", timeout=0)),
                "wait negative": await expect_error(client.call("SandboxWait", api_pb2.SandboxWaitRequest(
                    sandbox_id=await client.sandbox("true", app_id=app_id, image_id=image_id), timeout=-1))),
                "terminate unknown": await expect_error(client.call("SandboxTerminate",
                                                                    api_pb2.SandboxTerminateRequest(sandbox_id="x"))),
            }

    errors = run(scenario())
    expected = {
        "missing app": (Status.INVALID_ARGUMENT, "app_id"),
        "unknown app": (Status.NOT_FOUND, "ap-unknown"),
        "missing image": (Status.INVALID_ARGUMENT, "definition.image_id"),
        "unknown image": (Status.NOT_FOUND, "im-unknown"),
        "unknown secret": (Status.NOT_FOUND, "st-unknown"),
        "long timeout": (Status.INVALID_ARGUMENT, "definition.timeout_secs"),
        "nul argument": (Status.INVALID_ARGUMENT, "definition.entrypoint_args"),
        "wait unknown": (Status.NOT_FOUND, "sb-"),
        "wait missing": (Status.INVALID_ARGUMENT, "sandbox_id"),
        "wait negative": (Status.INVALID_ARGUMENT, "timeout"),
        "terminate unknown": (Status.NOT_FOUND, "x"),
    }
    for name, (status, fragment) in expected.items():
        assert (name, errors[name].status) == (name, status)
        assert fragment in errors[name].message, name
