"""SandboxGetLogs: entry ids, resume, UTF-8 splitting, eof and the long-poll timeout."""

from __future__ import annotations

import asyncio
import time

from grpclib.const import Status
from modal_proto import api_pb2

from emulator_client import Client, entry_number, run

FIVE_LINES = "for i in 1 2 3 4 5; do echo line$i; sleep 0.05; done"


def test_logs_resume_after_each_batch(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", FIVE_LINES)
            await client.wait_finished(sandbox_id)
            batches, error = await client.log_batches(sandbox_id, last_entry_id="")
            assert error is None
            boundaries = [(batch.entry_id, "".join(item.data for item in batch.items))
                          for batch in batches if batch.items]
            resumed = {}
            for index, (entry_id, _) in enumerate(boundaries):
                later, error = await client.log_batches(sandbox_id, last_entry_id=entry_id)
                assert error is None
                resumed[entry_id] = ("".join(item.data for b in later for item in b.items), later[-1].eof)
            from_zero, _ = await client.log_batches(sandbox_id, last_entry_id="0-0")
            return batches, boundaries, resumed, from_zero

    batches, boundaries, resumed, from_zero = run(scenario())
    full = "".join(text for _, text in boundaries)
    assert full == "".join(f"line{i}\n" for i in range(1, 6))
    numbers = [entry_number(entry_id) for entry_id, _ in boundaries]
    assert numbers == sorted(set(numbers))
    assert numbers[0] >= 1
    for index, (entry_id, _) in enumerate(boundaries):
        expected = "".join(text for _, text in boundaries[index + 1:])
        assert resumed[entry_id] == (expected, True)
    assert [b.entry_id for b in from_zero] == [b.entry_id for b in batches]


def test_logs_eof_batch_repeats_last_id(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "echo out; echo err >&2")
            await client.wait_finished(sandbox_id)
            stdout, _ = await client.log_batches(sandbox_id, fd=1)
            stderr, _ = await client.log_batches(sandbox_id, fd=2)
            return stdout, stderr

    stdout, stderr = run(scenario())
    for batches, text in ((stdout, "out\n"), (stderr, "err\n")):
        assert "".join(item.data for b in batches for item in b.items) == text
        eof = batches[-1]
        assert eof.eof
        assert list(eof.items) == []
        assert eof.entry_id == batches[-2].entry_id
        assert sum(1 for b in batches if b.eof) == 1


def test_logs_split_on_utf8_boundaries(emulator):
    script = ("import sys, time\n"
              "out = sys.stdout.buffer\n"
              "out.write(b'caf\\xc3'); out.flush(); time.sleep(0.4)\n"
              "out.write(b'\\xa9 \\xff\\xfe end\\n'); out.flush()\n")

    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("python", "-c", script)
            await client.wait_finished(sandbox_id)
            return await client.log_batches(sandbox_id)

    batches, error = run(scenario())
    assert error is None
    items = [item.data for b in batches for item in b.items]
    assert items[0] == "caf"
    assert "".join(items) == "caf\u00e9 \ufffd\ufffd end\n"
    for data in items:
        data.encode("utf-8")


def test_logs_invalid_bytes_at_exit_replaced(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("printf", "ok\\342\\202")
            await client.wait_finished(sandbox_id)
            return await client.read_all_logs(sandbox_id)

    text, _ = run(scenario())
    assert text == "ok\ufffd"


def test_logs_timeout_ends_without_eof(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "echo started; sleep 30")
            started = time.monotonic()
            batches, error = await client.log_batches(sandbox_id, timeout=0.5)
            elapsed = time.monotonic() - started
            await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=sandbox_id))
            return batches, error, elapsed

    batches, error, elapsed = run(scenario())
    assert error is None
    assert 0.4 <= elapsed < 3.0
    assert not any(batch.eof for batch in batches)
    assert "".join(item.data for b in batches for item in b.items) == "started\n"


def test_logs_zero_timeout_returns_at_once(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("sleep", "30")
            started = time.monotonic()
            batches, error = await client.log_batches(sandbox_id, timeout=0)
            elapsed = time.monotonic() - started
            await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=sandbox_id))
            return batches, error, elapsed

    batches, error, elapsed = run(scenario())
    assert error is None
    assert batches == []
    assert elapsed < 5.0


def test_logs_terminate_sends_eof_to_readers(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "echo before; sleep 30")
            readers = [asyncio.ensure_future(client.log_batches(sandbox_id, fd=fd, timeout=20)) for fd in (1, 2)]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=sandbox_id))
            results = await asyncio.gather(*readers)
            return results, time.monotonic() - started

    ((stdout, stdout_error), (stderr, stderr_error)), elapsed = run(scenario())
    assert stdout_error is None
    assert stderr_error is None
    assert elapsed < 5.0
    assert stdout[-1].eof
    assert stderr[-1].eof
    assert "".join(item.data for b in stdout for item in b.items) == "before\n"


def test_logs_pty_merges_stderr_into_stdout(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "echo one; echo two >&2",
                                              pty_info=api_pb2.PTYInfo(enabled=True))
            await client.wait_finished(sandbox_id)
            return await client.read_all_logs(sandbox_id, 1), await client.read_all_logs(sandbox_id, 2)

    (stdout, _), (stderr, _) = run(scenario())
    assert stdout == "one\ntwo\n"
    assert stderr == ""


def test_logs_invalid_requests_rejected(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("true")
            cases = {
                "fd": api_pb2.SandboxGetLogsRequest(sandbox_id=sandbox_id, file_descriptor=3, timeout=1),
                "cursor": api_pb2.SandboxGetLogsRequest(sandbox_id=sandbox_id, file_descriptor=1, timeout=1,
                                                        last_entry_id="abc"),
                "timeout": api_pb2.SandboxGetLogsRequest(sandbox_id=sandbox_id, file_descriptor=1, timeout=-1),
                "missing": api_pb2.SandboxGetLogsRequest(file_descriptor=1, timeout=1),
                "unknown": api_pb2.SandboxGetLogsRequest(sandbox_id="sb-" + "x" * 22, file_descriptor=1, timeout=1),
            }
            errors = {}
            for name, request in cases.items():
                try:
                    await client.call("SandboxGetLogs", request)
                except Exception as exc:  # noqa: BLE001 - the status is the result under test
                    errors[name] = exc
            return errors

    errors = run(scenario())
    assert errors["fd"].status == Status.INVALID_ARGUMENT
    assert "file_descriptor" in errors["fd"].message
    assert errors["cursor"].status == Status.INVALID_ARGUMENT
    assert "last_entry_id" in errors["cursor"].message
    assert errors["timeout"].status == Status.INVALID_ARGUMENT
    assert "timeout" in errors["timeout"].message
    assert errors["missing"].status == Status.INVALID_ARGUMENT
    assert "sandbox_id" in errors["missing"].message
    assert errors["unknown"].status == Status.NOT_FOUND
