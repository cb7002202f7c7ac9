"""Fault injection: each fault kind, observed through grpclib or at the HTTP/2 frame level."""

from __future__ import annotations

import asyncio
import time
import urllib.parse

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from h2.errors import ErrorCodes
from modal_proto import api_pb2

from emulator_client import Client, entry_number, run
from h2_frames import FrameClient, grpc_frame, grpc_messages
from hyperframe.frame import DataFrame, PingFrame
from mfmodal.emulator.testing import EmulatorError

COUNTED_LINES = "for i in 1 2 3 4 5 6; do echo line$i; sleep 0.1; done"


def frame_client(emulator) -> FrameClient:
    parsed = urllib.parse.urlparse(emulator.url)
    return FrameClient(parsed.hostname, parsed.port)


def app_request(name: str = "faults") -> bytes:
    return api_pb2.AppGetOrCreateRequest(
        app_name=name, object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING).SerializeToString()


async def statuses(client: Client, count: int) -> list:
    results = []
    for _ in range(count):
        try:
            await client.app()
            results.append("OK")
        except GRPCError as exc:
            results.append((exc.status.name, exc.message))
    return results


async def finished_sandbox_with_lines(client: Client, emulator) -> str:
    sandbox_id = await client.sandbox("bash", "-c", COUNTED_LINES)
    await client.wait_finished(sandbox_id)
    assert emulator.state()["sandboxes"][sandbox_id]["stdout_entries"] >= 4
    return sandbox_id


def test_error_fault_hits_nth_call(emulator):
    emulator.add_fault("error:method=AppGetOrCreate,calls=2,status=UNAVAILABLE,message=try again later")
    before = emulator.state()["calls"].get("AppGetOrCreate", {})

    async def scenario():
        async with Client(emulator.url) as client:
            return await statuses(client, 3)

    assert run(scenario()) == ["OK", ("UNAVAILABLE", "try again later"), "OK"]
    after = emulator.state()["calls"]["AppGetOrCreate"]
    assert after["OK"] - before.get("OK", 0) == 2
    assert after["UNAVAILABLE"] - before.get("UNAVAILABLE", 0) == 1
    fault = emulator.faults_state()[0]
    assert (fault["seen"], fault["fired"]) == (3, 1)


def test_error_fault_covers_call_range(emulator):
    emulator.add_fault({"kind": "error", "method": "AppGetOrCreate", "calls": "2-3", "status": "INTERNAL"})

    async def scenario():
        async with Client(emulator.url) as client:
            return [result if result == "OK" else result[0] for result in await statuses(client, 4)]

    assert run(scenario()) == ["OK", "INTERNAL", "INTERNAL", "OK"]


def test_error_fault_sends_retry_policy_detail(emulator):
    emulator.add_fault("error:method=AppGetOrCreate,calls=1,status=RESOURCE_EXHAUSTED,retry_after=1.5,message=slow down")
    client = frame_client(emulator)
    stream_id = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.streams[stream_id].done)
    client.close()
    result = client.streams[stream_id]

    assert result.header("grpc-status") == str(Status.RESOURCE_EXHAUSTED.value)
    assert result.header("grpc-message") == "slow down"
    import base64
    raw = result.header("grpc-status-details-bin")
    details = api_pb2.RPCStatus.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    assert details.code == Status.RESOURCE_EXHAUSTED.value
    assert details.details[0].type_url == "type.googleapis.com/modal.client.RPCRetryPolicy"
    policy = api_pb2.RPCRetryPolicy()
    details.details[0].Unpack(policy)
    assert policy.retry_after_secs == pytest.approx(1.5)


def test_error_fault_after_processing_keeps_idempotency(emulator):
    emulator.add_fault("error:method=SandboxCreate,calls=1,status=UNAVAILABLE,when=after")

    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            image_id = await client.image(app_id)
            key = client.md(x_idempotency_key="after-fault-key")
            with pytest.raises(GRPCError) as first:
                await client.sandbox("sleep", "30", app_id=app_id, image_id=image_id, metadata=key)
            retried = await client.sandbox("sleep", "30", app_id=app_id, image_id=image_id, metadata=key)
            await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=retried))
            return first.value, retried

    error, retried = run(scenario())
    assert error.status == Status.UNAVAILABLE
    matching = [sid for sid, record in emulator.state()["sandboxes"].items()
                if record["idempotency_key"] == "after-fault-key"]
    assert matching == [retried]


def test_delay_fault_slows_method(emulator):
    emulator.add_fault("delay:method=AppGetOrCreate,seconds=0.5,calls=1")

    async def scenario():
        async with Client(emulator.url) as client:
            started = time.monotonic()
            await client.app()
            slow = time.monotonic() - started
            started = time.monotonic()
            await client.app()
            return slow, time.monotonic() - started

    slow, fast = run(scenario())
    assert slow >= 0.5
    assert fast < 0.5
    assert emulator.faults_state()[0]["fired"] == 1


def test_create_rate_fault_rejects_excess(emulator):
    emulator.add_fault("create_rate:limit=2,retry_after=0.25")

    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            image_id = await client.image(app_id)
            attempts = [client.sandbox("true", app_id=app_id, image_id=image_id) for _ in range(4)]
            outcomes = await asyncio.gather(*attempts, return_exceptions=True)
            await asyncio.sleep(1.05)
            later = await client.sandbox("true", app_id=app_id, image_id=image_id)
            return outcomes, later

    outcomes, later = run(scenario())
    accepted = [outcome for outcome in outcomes if isinstance(outcome, str)]
    rejections = [outcome for outcome in outcomes if isinstance(outcome, GRPCError)]
    assert len(accepted) + len(rejections) == 4
    assert 2 <= len(accepted) < 4
    rejected = rejections[0]
    assert rejected.status == Status.RESOURCE_EXHAUSTED
    assert "rate limit (2/s)" in rejected.message
    assert rejected.details[0].retry_after_secs == pytest.approx(0.25)
    assert later.startswith("sb-")


def test_log_cut_ok_then_resume(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await finished_sandbox_with_lines(client, emulator)
            emulator.add_fault("log_cut:after=2,calls=1")
            first, error = await client.log_batches(sandbox_id)
            rest, _ = await client.log_batches(sandbox_id, last_entry_id=first[-1].entry_id)
            return first, error, rest

    first, error, rest = run(scenario())
    assert error is None
    assert sum(len(batch.items) for batch in first) == 2
    assert not any(batch.eof for batch in first)
    text = "".join(item.data for b in first + rest for item in b.items)
    assert text == "".join(f"line{i}\n" for i in range(1, 7))
    assert rest[-1].eof


def test_log_cut_unavailable(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await finished_sandbox_with_lines(client, emulator)
            emulator.add_fault("log_cut:after=1,status=UNAVAILABLE,fd=1")
            stdout = await client.log_batches(sandbox_id, fd=1)
            stderr = await client.log_batches(sandbox_id, fd=2)
            return stdout, stderr

    (batches, error), (stderr_batches, stderr_error) = run(scenario())
    assert sum(len(batch.items) for batch in batches) == 1
    assert error.status == Status.UNAVAILABLE
    assert stderr_error is None
    assert stderr_batches[-1].eof


def test_log_stall_pauses_stream(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await finished_sandbox_with_lines(client, emulator)
            emulator.add_fault("log_stall:after=0,seconds=0.8,calls=1")
            started = time.monotonic()
            batches, error = await client.log_batches(sandbox_id, timeout=0.1)
            return batches, error, time.monotonic() - started

    batches, error, elapsed = run(scenario())
    assert error is None
    assert elapsed >= 0.8
    assert batches[-1].eof


def test_log_replay_resends_entries_before_cursor(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await finished_sandbox_with_lines(client, emulator)
            batches, _ = await client.log_batches(sandbox_id)
            items = [item.data for item in batches[0].items]
            # A batch contains consecutive entries, so the second item's id follows from the batch's last id.
            second_id = f"{entry_number(batches[0].entry_id) - len(items) + 2}-0"
            emulator.add_fault("log_replay:entries=1,calls=1")
            replayed, _ = await client.log_batches(sandbox_id, last_entry_id=second_id)
            plain, _ = await client.log_batches(sandbox_id, last_entry_id=second_id)
            return items, replayed, plain

    items, replayed, plain = run(scenario())
    assert len(items) >= 3
    assert [item.data for item in replayed[0].items] == items[1:]
    assert [item.data for item in plain[0].items] == items[2:]


def test_log_empty_batches_at_start(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await finished_sandbox_with_lines(client, emulator)
            emulator.add_fault("log_empty:count=2,calls=1")
            return await client.log_batches(sandbox_id, last_entry_id="0-0")

    batches, error = run(scenario())
    assert error is None
    assert [len(batch.items) for batch in batches[:2]] == [0, 0]
    assert [batch.entry_id for batch in batches[:3]] == ["0-0", "0-0", "0-0"]
    assert [item.data for item in batches[2].items] == [""]
    assert batches[3].items[0].data.startswith("line1")


def test_log_keepalive_repeats_cursor(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await client.sandbox("bash", "-c", "echo hi; sleep 30")
            await asyncio.sleep(0.2)
            emulator.add_fault("log_keepalive:interval=0.2")
            batches, _ = await client.log_batches(sandbox_id, timeout=1.5)
            await client.call("SandboxTerminate", api_pb2.SandboxTerminateRequest(sandbox_id=sandbox_id))
            return batches

    batches = run(scenario())
    assert batches[0].items[0].data == "hi\n"
    keepalives = batches[1:]
    assert len(keepalives) >= 3
    assert all(not batch.items and batch.entry_id == batches[0].entry_id for batch in keepalives)


def test_disconnect_after_entries_cuts_connection(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            sandbox_id = await finished_sandbox_with_lines(client, emulator)
        emulator.add_fault("disconnect:method=SandboxGetLogs,after_entries=2,calls=1")
        async with Client(emulator.url) as client:
            request = api_pb2.SandboxGetLogsRequest(sandbox_id=sandbox_id, file_descriptor=1, timeout=5)
            received = []
            with pytest.raises((StreamTerminatedError, ConnectionError, GRPCError)):
                async with client.stub.SandboxGetLogs.open(metadata=client.metadata, timeout=10) as stream:
                    await stream.send_message(request, end=True)
                    async for batch in stream:
                        received.append(batch)
            return received

    received = run(scenario())
    assert sum(len(batch.items) for batch in received) == 2
    assert emulator.state()["calls"]["SandboxGetLogs"]["DISCONNECTED"] >= 1


@pytest.mark.parametrize("mode", ["fin", "rst"])
def test_disconnect_after_create_keeps_sandbox(emulator, mode):
    emulator.add_fault(f"disconnect:method=SandboxCreate,when=after,mode={mode},calls=1")
    before = set(emulator.state()["sandboxes"])

    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            image_id = await client.image(app_id)
            with pytest.raises((StreamTerminatedError, ConnectionError, GRPCError)):
                await client.sandbox("sleep", "30", app_id=app_id, image_id=image_id,
                                     metadata=client.md(x_idempotency_key=f"cut-{mode}"))
        async with Client(emulator.url) as client:
            return await client.sandbox("sleep", "30", app_id=app_id, image_id=image_id,
                                        metadata=client.md(x_idempotency_key=f"cut-{mode}"))

    retried = run(scenario())
    created = set(emulator.state()["sandboxes"]) - before
    assert created == {retried}
    connection = [c for c in emulator.state()["connections"] if c["closed_by_emulator"]][-1]
    assert "SandboxCreate" in connection["closed_by_emulator"]


def test_disconnect_before_processing_frame_level(emulator):
    emulator.add_fault("disconnect:method=AppGetOrCreate,calls=1,mode=rst")
    client = frame_client(emulator)
    stream_id = client.request("AppGetOrCreate", app_request("never-created"))
    client.pump(lambda: False, timeout=2)
    client.close()
    assert client.closed
    assert not client.streams[stream_id].done
    assert not any(app["name"] == "never-created" for app in emulator.state()["apps"].values())


def test_goaway_after_streams_drains_then_closes(emulator):
    emulator.add_fault("goaway:after=2")
    client = frame_client(emulator)
    open_stream = client.request("SandboxWait", None)
    second = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.goaways and client.streams[second].done)
    third = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.streams[third].done, timeout=3)
    still_open = not client.closed
    # Finishing the open request lets the last stream drain, and the emulator then closes.
    wait_request = api_pb2.SandboxWaitRequest(sandbox_id="sb-x").SerializeToString()
    client.send(DataFrame(open_stream, data=grpc_frame(wait_request), flags=["END_STREAM"]))
    client.pump(lambda: client.closed, timeout=3)
    client.close()

    assert len(client.goaways) == 1
    assert client.goaways[0].last_stream_id == second
    assert client.goaways[0].error_code == ErrorCodes.NO_ERROR
    assert client.streams[second].header("grpc-status") == "0"
    assert client.streams[third].reset_code == ErrorCodes.REFUSED_STREAM
    assert still_open
    assert client.streams[open_stream].header("grpc-status") == str(Status.NOT_FOUND.value)
    assert client.closed


def test_goaway_graceful_two_phase(emulator):
    emulator.add_fault("goaway:after=1,grace=0.3")
    client = frame_client(emulator)
    open_stream = client.request("SandboxWait", None)
    client.pump(lambda: len(client.goaways) >= 1, timeout=3)
    during_grace = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: len(client.goaways) >= 2, timeout=3)
    client.pump(lambda: client.streams[during_grace].done, timeout=3)
    late = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.streams[late].done, timeout=3)
    client.close()

    assert [g.last_stream_id for g in client.goaways] == [2 ** 31 - 1, during_grace]
    assert client.streams[during_grace].header("grpc-status") == "0"
    assert client.streams[late].reset_code == ErrorCodes.REFUSED_STREAM
    assert open_stream not in [s for s, r in client.streams.items() if r.reset_code is not None]


def test_goaway_enhance_your_calm_closes(emulator):
    emulator.add_fault("goaway:after=1,code=ENHANCE_YOUR_CALM,debug=too_many_pings")
    client = frame_client(emulator)
    client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.closed, timeout=3)
    client.close()
    assert client.goaways[0].error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert bytes(client.goaways[0].additional_data) == b"too_many_pings"


def test_max_streams_advertised_and_enforced(emulator):
    emulator.add_fault("max_streams:limit=2")
    client = frame_client(emulator)
    client.pump(lambda: client.max_concurrent_streams() is not None, timeout=3)
    held_streams = [client.request("SandboxWait", None) for _ in range(2)]
    extra = client.request("SandboxWait", None)
    client.pump(lambda: client.streams[extra].done, timeout=3)
    emulator.add_fault("max_streams:limit=1")
    client.pump(lambda: client.max_concurrent_streams() == 1, timeout=3)
    client.close()

    assert client.settings[0][3] == 2  # SETTINGS_MAX_CONCURRENT_STREAMS in the first SETTINGS frame
    assert client.streams[extra].reset_code == ErrorCodes.REFUSED_STREAM
    assert not any(client.streams[s].done for s in held_streams)
    assert client.max_concurrent_streams() == 1
    connection = [c for c in emulator.state()["connections"] if c["refused_streams"]][-1]
    assert connection["refused_streams"][0]["stream_id"] == extra


def test_raw_status_trailers_only_verbatim_message(emulator):
    emulator.add_fault("raw_status:method=AppGetOrCreate,calls=1,status=NOT_FOUND,message=App%20not%20found")
    client = frame_client(emulator)
    stream_id = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.streams[stream_id].done)
    client.close()
    result = client.streams[stream_id]
    assert result.trailers is None
    assert dict(result.headers)["grpc-status"] == "5"
    assert dict(result.headers)["grpc-message"] == "App%20not%20found"
    assert result.data == b""


def test_raw_status_raw_bytes_message(emulator):
    emulator.add_fault("raw_status:method=AppGetOrCreate,calls=1,status=INTERNAL,message_hex=c3a9")
    client = frame_client(emulator)
    stream_id = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.streams[stream_id].done)
    client.close()
    assert dict(client.streams[stream_id].headers)["grpc-message"] == b"\xc3\xa9"


def test_raw_status_no_trailers(emulator):
    emulator.add_fault("raw_status:method=AppGetOrCreate,calls=1,variant=no_trailers")
    client = frame_client(emulator)
    stream_id = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.streams[stream_id].done)
    client.close()
    result = client.streams[stream_id]
    assert result.trailers is None
    assert "grpc-status" not in dict(result.headers)
    [message] = grpc_messages(result.data)
    assert api_pb2.AppGetOrCreateResponse.FromString(message).app_id.startswith("ap-")


def test_raw_status_status_in_headers(emulator):
    emulator.add_fault("raw_status:method=AppGetOrCreate,calls=1,variant=status_in_headers,status=INTERNAL")
    client = frame_client(emulator)
    stream_id = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.streams[stream_id].done)
    client.close()
    result = client.streams[stream_id]
    assert dict(result.headers)["grpc-status"] == "0"
    assert dict(result.trailers)["grpc-status"] == "13"
    assert len(grpc_messages(result.data)) == 1


def test_raw_status_http_error(emulator):
    emulator.add_fault("raw_status:method=AppGetOrCreate,calls=1,variant=http_error,http_status=502")
    client = frame_client(emulator)
    stream_id = client.request("AppGetOrCreate", app_request())
    client.pump(lambda: client.streams[stream_id].done)
    client.close()
    assert dict(client.streams[stream_id].headers)[":status"] == "502"
    assert client.streams[stream_id].header("grpc-status") is None


def test_image_stream_fault_uses_join_streaming(emulator):
    emulator.add_fault("image_stream:match=streamed-image,lines=4,seconds=0.2")

    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            request = api_pb2.ImageGetOrCreateRequest(app_id=app_id, image=api_pb2.Image(
                dockerfile_commands=["FROM streamed-image:1", "RUN echo hi"]))
            created = await client.call("ImageGetOrCreate", request)
            responses = await client.call("ImageJoinStreaming", api_pb2.ImageJoinStreamingRequest(
                image_id=created.image_id, timeout=10))
            cached = await client.call("ImageGetOrCreate", request)
            return created, responses, cached

    created, responses, cached = run(scenario())
    assert not created.HasField("result")
    logs = [log.data for response in responses for log in response.task_logs]
    assert len(logs) == 4
    assert logs[0] == f"Building image {created.image_id}\n"
    final = responses[-1]
    assert final.result.status == api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
    assert final.metadata.image_builder_version == "2025.06"
    assert sum(1 for response in responses if response.HasField("result")) == 1
    assert cached.result.status == api_pb2.GenericResult.GENERIC_STATUS_SUCCESS


def test_image_fail_fault_reports_failure(emulator):
    emulator.add_fault("image_fail:match=broken-image,message=manifest unknown")

    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            created = await client.call("ImageGetOrCreate", api_pb2.ImageGetOrCreateRequest(
                app_id=app_id, image=api_pb2.Image(dockerfile_commands=["FROM broken-image:latest"])))
            responses = await client.call("ImageJoinStreaming", api_pb2.ImageJoinStreamingRequest(
                image_id=created.image_id, timeout=10))
            with pytest.raises(GRPCError) as create_error:
                await client.sandbox("true", app_id=app_id, image_id=created.image_id)
            return responses, create_error.value

    responses, create_error = run(scenario())
    final = responses[-1]
    assert final.result.status == api_pb2.GenericResult.GENERIC_STATUS_FAILURE
    assert final.result.exception == "manifest unknown"
    assert any("Error: manifest unknown" in log.data for r in responses for log in r.task_logs)
    assert create_error.status == Status.FAILED_PRECONDITION


def test_fault_spec_errors_reported(emulator):
    for spec, fragment in [
        ("explode", 'invalid fault kind "explode"'),
        ("error:status=NOPE", 'invalid status "NOPE"'),
        ("error:calls=0", 'invalid calls "0"'),
        ("delay:method=AppGetOrCreate", "missing parameter seconds"),
        ("error:colour=red", "unknown parameter(s) colour"),
        ("log_cut:after=1,method=AppGetOrCreate", 'invalid method "AppGetOrCreate"'),
        ("disconnect:after_entries=1", "after_entries needs method=SandboxGetLogs"),
    ]:
        with pytest.raises(EmulatorError) as error:
            emulator.add_fault(spec)
        assert "HTTP 400" in str(error.value)
        assert fragment in str(error.value)
    assert emulator.faults_state() == []


def test_ping_limit_sends_too_many_pings(emulator):
    emulator.add_fault("ping_limit:min_interval=60,strikes=1")
    client = frame_client(emulator)
    # One write: the emulator closes after the third PING, and a later write would fail.
    pings = b"".join(PingFrame(0, opaque_data=index.to_bytes(8, "big")).serialize() for index in range(4))
    client.sock.sendall(pings)
    client.pump(lambda: client.closed, timeout=3)
    client.close()
    assert client.goaways[-1].error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert bytes(client.goaways[-1].additional_data) == b"too_many_pings"
    connection = [c for c in emulator.state()["connections"] if c["closed_by_emulator"] == "too many pings"][-1]
    assert connection["ping_strikes"] == 2


def test_raw_status_skips_streaming_handler(emulator):
    emulator.add_fault("raw_status:method=SandboxGetLogs,calls=1,status=UNAVAILABLE,message=proxy reset")
    client = frame_client(emulator)
    request = api_pb2.SandboxGetLogsRequest(sandbox_id="sb-" + "0" * 22, file_descriptor=1, timeout=1)
    stream_id = client.request("SandboxGetLogs", request.SerializeToString())
    client.pump(lambda: client.streams[stream_id].done)
    client.close()
    result = client.streams[stream_id]
    assert result.trailers is None
    assert dict(result.headers)["grpc-status"] == str(Status.UNAVAILABLE.value)
    assert dict(result.headers)["grpc-message"] == "proxy reset"
