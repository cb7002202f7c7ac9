"""The server around the RPCs: auth, UNIMPLEMENTED, TLS, shutdown, control API, command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
import trustme
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from emulator_client import Client, run, wait_exited
from h2_frames import FrameClient
from mfmodal.emulator.testing import EmulatorProcess


async def error_of(awaitable) -> GRPCError:
    try:
        await awaitable
    except GRPCError as exc:
        return exc
    raise AssertionError("the call succeeded but an error status was expected")


def test_unimplemented_methods_answer_status_12(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            unary = await error_of(client.call("FunctionGet", api_pb2.FunctionGetRequest(app_name="x")))
            streaming = await error_of(client.call("AppGetLogs", api_pb2.AppGetLogsRequest(app_id="ap-x")))
            still_serving = await client.app()
            return unary, streaming, still_serving

    unary, streaming, still_serving = run(scenario())
    assert unary.status == Status.UNIMPLEMENTED
    assert "FunctionGet" in unary.message
    assert streaming.status == Status.UNIMPLEMENTED
    assert still_serving.startswith("ap-")
    assert emulator.state()["calls"]["FunctionGet"] == {"UNIMPLEMENTED": 1}


def test_v2_methods_point_to_v1(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            return await error_of(client.call("SandboxCreateV2", api_pb2.SandboxCreateV2Request()))

    error = run(scenario())
    assert error.status == Status.UNIMPLEMENTED
    assert "MODAL_SANDBOX_V2=0" in error.message


def test_unknown_path_answers_unimplemented(emulator):
    parsed = urllib.parse.urlparse(emulator.url)
    client = FrameClient(parsed.hostname, parsed.port)
    stream_id = client.request("NoSuchMethod", b"")
    client.pump(lambda: client.streams[stream_id].done)
    client.close()
    assert client.streams[stream_id].header("grpc-status") == str(Status.UNIMPLEMENTED.value)


def test_missing_token_rejected(emulator):
    async def scenario():
        async with Client(emulator.url, token_id="", token_secret="") as client:
            no_id = await error_of(client.app())
        async with Client(emulator.url, token_secret="") as client:
            no_secret = await error_of(client.app())
        return no_id, no_secret

    no_id, no_secret = run(scenario())
    assert no_id.status == Status.UNAUTHENTICATED
    assert "x-modal-token-id" in no_id.message
    assert no_secret.status == Status.UNAUTHENTICATED
    assert "x-modal-token-secret" in no_secret.message


def test_configured_tokens_checked(start_emulator):
    emulator = start_emulator(tokens={"ak-good": "as-good-secret"})

    async def scenario():
        async with Client(emulator.url, token_id="ak-good", token_secret="as-wrong-secret") as client:
            wrong_secret = await error_of(client.app())
        async with Client(emulator.url, token_id="ak-other", token_secret="as-good-secret") as client:
            wrong_id = await error_of(client.app())
        async with Client(emulator.url, token_id="ak-good", token_secret="as-good-secret") as client:
            accepted = await client.app()
        return wrong_secret, wrong_id, accepted

    wrong_secret, wrong_id, accepted = run(scenario())
    for error in (wrong_secret, wrong_id):
        assert error.status == Status.UNAUTHENTICATED
        assert "invalid token" in error.message
        assert "as-good-secret" not in error.message
        assert "as-wrong-secret" not in error.message
    assert accepted.startswith("ap-")
    assert "as-good-secret" not in emulator.log()
    assert "as-good-secret" not in json.dumps(emulator.state())


def test_tls_with_alpn_h2(start_emulator, tmp_path):
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    certificate.cert_chain_pems[0].write_to_path(cert_path)
    for pem in certificate.cert_chain_pems[1:]:
        pem.write_to_path(cert_path, append=True)
    certificate.private_key_pem.write_to_path(key_path)
    emulator = start_emulator(tls_cert=cert_path, tls_key=key_path)

    context = ssl.create_default_context()
    authority.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    parsed = urllib.parse.urlparse(emulator.url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            negotiated = tls.selected_alpn_protocol()

    async def scenario():
        async with Client(emulator.url, ssl_context=context) as client:
            return await client.app()

    assert emulator.url.startswith("https://127.0.0.1:")
    assert negotiated == "h2"
    assert run(scenario()).startswith("ap-")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_kills_sandbox_process_groups(tmp_path, signum):
    emulator = EmulatorProcess(tmp_path / "emulator").start()
    try:
        async def scenario():
            async with Client(emulator.url) as client:
                sandbox_id = await client.sandbox("bash", "-c", "sleep 60 & echo $!; wait")
                batches, _ = await client.log_batches(sandbox_id, timeout=2)
                return sandbox_id, int("".join(i.data for b in batches for i in b.items).split()[0])

        sandbox_id, child_pid = run(scenario())
        main_pid = emulator.state()["sandboxes"][sandbox_id]["pid"]
        emulator.process.send_signal(signum)
        code = emulator.process.wait(timeout=20)
    finally:
        emulator.stop()

    assert code == 0
    assert wait_exited(main_pid)
    assert wait_exited(child_pid)
    final = emulator.state_file()["sandboxes"][sandbox_id]
    assert final["status"] == "finished"
    assert final["result_status"] == "GENERIC_STATUS_TERMINATED"


def test_malformed_grpc_timeout_rejected(emulator):
    parsed = urllib.parse.urlparse(emulator.url)
    client = FrameClient(parsed.hostname, parsed.port)
    request = api_pb2.AppGetOrCreateRequest(app_name="x", object_creation_type=1).SerializeToString()
    bad = client.request("AppGetOrCreate", request, extra_headers=(("grpc-timeout", "123456789S"),))
    good = client.request("AppGetOrCreate", request, extra_headers=(("grpc-timeout", "10S"),))
    client.pump(lambda: client.streams[bad].done and client.streams[good].done)
    client.close()
    assert client.streams[bad].header("grpc-status") == str(Status.INTERNAL.value)
    assert "grpc-timeout" in urllib.parse.unquote(client.streams[bad].header("grpc-message"))
    assert client.streams[good].header("grpc-status") == "0"
    recent = emulator.state()["recent_calls"]
    assert any(call["grpc_timeout"] == "10S" and call["status"] == "OK" for call in recent)
    assert any(call["grpc_timeout"] == "123456789S" and call["status"] == "INTERNAL" for call in recent)


def test_malformed_request_message_rejected(emulator):
    parsed = urllib.parse.urlparse(emulator.url)
    client = FrameClient(parsed.hostname, parsed.port)
    stream_id = client.request("SandboxWait", b"\xff\xff\xff")
    client.pump(lambda: client.streams[stream_id].done)
    client.close()
    assert client.streams[stream_id].header("grpc-status") == str(Status.INVALID_ARGUMENT.value)


def test_control_api_errors(emulator):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def status(method, path, body=None):
        request = urllib.request.Request(emulator.control_url + path, data=body, method=method)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert status("GET", "/health") == (200, {"ok": True})
    assert status("GET", "/nowhere")[0] == 404
    assert status("POST", "/faults", b"not json")[0] == 400
    assert status("DELETE", "/faults/999")[0] == 404
    assert status("PUT", "/faults")[0] == 405
    code, body = status("POST", "/faults", json.dumps({"kind": "delay", "seconds": 0.1}).encode())
    assert code == 201
    assert body["fault"]["kind"] == "delay"
    assert status("DELETE", f"/faults/{body['fault']['id']}") == (200, {"removed": 1})


def test_state_file_written_at_start(emulator):
    state = emulator.state_file()
    assert state["emulator"]["url"] == emulator.url
    assert state["emulator"]["control_url"] == emulator.control_url
    assert not [name for name in os.listdir(emulator.state_dir) if name.endswith(".tmp")]


@pytest.mark.parametrize("args,fragment", [
    (["--fault", "explode"], 'invalid fault kind "explode"'),
    (["--secrets-file", "/nonexistent/secrets.json"], "cannot read secrets file"),
    (["--token-id", "ak-1"], "give them in pairs"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "cannot load TLS certificate"),
])
def test_command_line_errors(tmp_path, args, fragment):
    result = subprocess.run([sys.executable, "-m", "mfmodal.emulator", "--state-dir", str(tmp_path), *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert result.stdout == ""


def test_console_script_prints_url(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "mfmodal-emulator")
    process = subprocess.Popen([script, "--port", "0", "--state-dir", str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        url = process.stdout.readline().strip()
        control = process.stdout.readline().strip()
        parsed = urllib.parse.urlparse(url)
        with socket.create_connection((parsed.hostname, parsed.port), timeout=5):
            pass
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        process.stdout.close()
    assert url.startswith("http://127.0.0.1:")
    assert control.startswith("control http://127.0.0.1:")
    assert code == 0


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback(start_emulator):
    emulator = start_emulator(host="::1")

    async def scenario():
        async with Client(emulator.url) as client:
            return await client.app()

    assert emulator.url.startswith("http://[::1]:")
    assert run(scenario()).startswith("ap-")
