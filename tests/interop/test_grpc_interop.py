"""The engine's gRPC client against a grpclib server that uses Modal's own
message classes, over h2c and TLS."""

import hashlib
import json
import re
import subprocess
import sys
import uuid

import pytest
import trustme

from enginetest import (TEST_TOKEN_ID, TEST_TOKEN_SECRET, built_program, engine_env,
                        run_program)

SERVER = __file__.replace("test_grpc_interop.py", "grpc_test_server.py")


class GrpcTestServer:
    def __init__(self, tmp_path, *args):
        self.record = tmp_path / "requests.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--record", str(self.record), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http"), self.proc.stderr.read()

    def requests(self):
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def start_server(tmp_path):
    servers = []

    def start(*args):
        server = GrpcTestServer(tmp_path, *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server):
    return start_server("--token-secret", TEST_TOKEN_SECRET)


def driver(server_url, *args, env_extra=None):
    program = built_program("tests/interop/grpc-driver")
    env = engine_env(server_url, **(env_extra or {}))
    return run_program([program, *args], env)


def stats(result):
    line = [l for l in result.stdout.splitlines() if l.startswith("stats ")][-1]
    return {k: int(v) for k, v in (f.split("=") for f in line.split()[1:])}


def test_unary_success_sends_modal_metadata(server):
    result = driver(server.url, "app", "demo", "create")
    assert result.returncode == 0, result.stderr
    assert "OK AppGetOrCreate app_id=ap-demo" in result.stdout
    (request,) = server.requests()
    assert request["method"] == "/modal.client.ModalClient/AppGetOrCreate"
    assert request["client_type"] == "1"
    assert request["client_version"] == "1.6.4"
    assert request["token_id"] == TEST_TOKEN_ID
    assert request["token_secret_matches"] is True
    assert request["retry_attempt"] == "0"
    assert request["content_type"] == "application/grpc"
    assert str(uuid.UUID(request["idempotency_key"])) == request["idempotency_key"]


def test_client_type_and_version_overridable(server):
    result = driver(server.url, "hello", env_extra={
        "MFMODAL_CLIENT_TYPE": "9", "MFMODAL_CLIENT_VERSION": "1.0.0"})
    assert result.returncode == 0, result.stderr
    (request,) = server.requests()
    assert (request["client_type"], request["client_version"]) == ("9", "1.0.0")


def test_not_found_trailers_only(server):
    result = driver(server.url, "app", "missing")
    assert result.returncode == 1
    assert "ERROR app NOT_FOUND App 'missing' not found" in result.stdout
    assert stats(result)["attempts"] == 1


def test_unauthenticated_not_retried(server):
    result = driver(server.url, "app", "demo", "create",
                    env_extra={"MODAL_TOKEN_SECRET": "as-wrong-secret"})
    assert result.returncode == 1
    assert "ERROR app UNAUTHENTICATED Invalid token secret for token id " + TEST_TOKEN_ID in result.stdout
    assert stats(result)["attempts"] == 1
    assert "as-wrong-secret" not in result.stdout + result.stderr


def test_status_in_trailers_after_data_wins(server):
    result = driver(server.url, "--no-retry", "app", "error-after-data")
    assert "ERROR app INTERNAL failed after the message" in result.stdout


def test_missing_grpc_status_is_internal(server):
    result = driver(server.url, "--no-retry", "app", "no-status")
    assert "ERROR app INTERNAL the response had no grpc-status" in result.stdout


def test_non_grpc_response_is_unavailable(server):
    result = driver(server.url, "--no-retry", "app", "bad-gateway")
    assert "ERROR app UNAVAILABLE HTTP status 502" in result.stdout


def test_grpc_message_percent_decoded(server):
    result = driver(server.url, "app", "unicode")
    assert "ERROR app FAILED_PRECONDITION café 100% ✓" in result.stdout


def test_unavailable_retried_with_same_key(server):
    result = driver(server.url, "app", "flaky", "create")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK AppGetOrCreate app_id=ap-flaky" in result.stdout
    requests = server.requests()
    assert [r["retry_attempt"] for r in requests] == ["0", "1", "2"]
    assert len({r["idempotency_key"] for r in requests}) == 1
    assert stats(result)["retries"] == 2


def test_retries_bounded(server):
    result = driver(server.url, "app", "always-unavailable")
    assert "ERROR app UNAVAILABLE the service is down" in result.stdout
    assert stats(result)["attempts"] == 4  # the first attempt and 3 retries


def test_resource_exhausted_without_policy_not_retried(server):
    result = driver(server.url, "app", "quota")
    assert "ERROR app RESOURCE_EXHAUSTED GPU quota exceeded" in result.stdout
    assert stats(result)["attempts"] == 1


def test_retry_policy_throttles_then_succeeds(server):
    result = driver(server.url, "app", "throttled", "create")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = stats(result)
    assert (counts["throttled"], counts["retries"], counts["attempts"]) == (1, 0, 2)
    requests = server.requests()
    assert [r["throttle_retry_attempt"] for r in requests] == [None, "1"]
    assert requests[0]["idempotency_key"] == requests[1]["idempotency_key"]


def test_deadline_sent_and_enforced(server):
    result = driver(server.url, "--timeout", "0.5", "--no-retry", "app", "slow", "create")
    assert "ERROR app DEADLINE_EXCEEDED" in result.stdout
    remaining = server.requests()[0]["deadline_remaining"]
    assert remaining is not None and 0.3 < remaining <= 0.5


def test_stream_of_10000_messages(server):
    result = driver(server.url, "logs", "many", "1")
    assert result.returncode == 0, result.stderr
    expected = hashlib.sha256("".join(f"line {n}\n" for n in range(1, 10001)).encode())
    assert (f"OK SandboxGetLogs batches=10001 items=10000 bytes={len(''.join(f'line {n}' + chr(10) for n in range(1, 10001)))} "
            f"last_entry_id=10000-0 eof=1 sha256={expected.hexdigest()}") in result.stdout


def test_messages_over_one_mebibyte(server):
    result = driver(server.url, "logs", "big", "1")
    assert result.returncode == 0, result.stderr
    data = "".join(chr(ord("a") + n) * (1536 * 1024) for n in range(1, 4))
    digest = hashlib.sha256(data.encode()).hexdigest()
    assert f"items=3 bytes={len(data)} last_entry_id=3-0 eof=1 sha256={digest}" in result.stdout

    result = driver(server.url, "secret", "K", str(2 * 1024 * 1024))
    assert f"OK SecretGetOrCreate secret_id=st-{2 * 1024 * 1024 + 1}" in result.stdout


def test_goaway_moves_calls_to_new_connection(start_server):
    server = start_server("--goaway-after", "3")
    result = driver(server.url, "--repeat", "20", "--parallel", "4", "app", "x", "create")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("OK AppGetOrCreate app_id=ap-x") == 20
    counts = stats(result)
    assert counts["goaways"] >= 1
    assert counts["connections"] >= 2
    assert counts["resubmitted"] >= 1
    assert counts["retries"] == 0
    # Streams above the GOAWAY's last stream id are sent again on a new
    # connection with the same idempotency key, so a server can tell them apart
    # from new calls.  (This test server still sees the refused copies.)
    keys = [r["idempotency_key"] for r in server.requests()]
    assert len(set(keys)) == 20
    assert 20 <= len(keys) <= 20 + counts["resubmitted"]


def test_stream_limit_opens_connections(start_server):
    server = start_server("--max-streams", "3")
    result = driver(server.url, "--repeat", "9", "--parallel", "9", "app", "pause", "create")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("OK AppGetOrCreate app_id=ap-pause") == 9
    counts = stats(result)
    assert counts["max_streams"] == 3
    assert counts["connections"] == 3


def test_stream_limit_queues_calls(start_server):
    server = start_server("--max-streams", "3")
    result = driver(server.url, "--max-connections", "1", "--repeat", "7",
                    "--parallel", "7", "app", "pause", "create")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("OK AppGetOrCreate app_id=ap-pause") == 7
    counts = stats(result)
    assert (counts["max_streams"], counts["connections"]) == (3, 1)


def test_rst_stream_maps_to_status(server):
    result = driver(server.url, "--no-retry", "app", "reset")
    assert result.returncode == 1
    assert "ERROR app INTERNAL stream 1 reset: INTERNAL_ERROR" in result.stdout


def test_keepalive_pings_while_calls_open(server):
    result = driver(server.url, "--keepalive", "0.2", "app", "pause", "create")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = stats(result)
    assert counts["pings_acked"] >= 2
    # the last PING may still be unanswered when the call ends
    assert counts["pings_sent"] - counts["pings_acked"] in (0, 1)


def test_no_keepalive_without_open_calls(server):
    result = driver(server.url, "--keepalive", "0.2", "hello")
    assert result.returncode == 0
    assert stats(result)["pings_sent"] == 0


def test_connection_cut_mid_stream(server):
    result = driver(server.url, "logs", "cut", "1")
    assert result.returncode == 1
    assert "ERROR SandboxGetLogs UNAVAILABLE connection to 127.0.0.1" in result.stdout
    assert "PARTIAL SandboxGetLogs batches=100 items=100" in result.stdout
    assert "last_entry_id=100-0" in result.stdout


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_server(start_server, tmp_path, ca, *names, alpn=None):
    cert = ca.issue_cert(*names)
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    args = ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    if alpn:
        args += ["--alpn", alpn]
    return start_server(*args)


def ca_file(tmp_path, ca):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_tls_success_with_ca_file(start_server, tmp_path, ca):
    server = tls_server(start_server, tmp_path, ca, "127.0.0.1")
    assert server.url.startswith("https://")
    result = driver(server.url, "--ca-file", ca_file(tmp_path, ca), "logs", "many", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "items=10000" in result.stdout


def test_tls_ca_file_from_environment(start_server, tmp_path, ca):
    server = tls_server(start_server, tmp_path, ca, "127.0.0.1")
    result = driver(server.url, "hello", env_extra={"MFMODAL_CA_FILE": ca_file(tmp_path, ca)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_tls_wrong_hostname_rejected(start_server, tmp_path, ca):
    server = tls_server(start_server, tmp_path, ca, "api.modal.test")
    result = driver(server.url, "--ca-file", ca_file(tmp_path, ca), "hello")
    assert result.returncode == 1
    assert re.search(r"TLS certificate verification failed for 127\.0\.0\.1: "
                     r"IP address mismatch", result.stdout), result.stdout
    assert stats(result)["attempts"] == 1  # a certificate error is not retried


def test_tls_untrusted_certificate_rejected(start_server, tmp_path, ca):
    server = tls_server(start_server, tmp_path, ca, "127.0.0.1")
    other_ca = trustme.CA()
    result = driver(server.url, "--ca-file", ca_file(tmp_path, other_ca), "hello")
    assert result.returncode == 1
    assert "TLS certificate verification failed for 127.0.0.1: unable to get local issuer certificate" in result.stdout


def test_tls_without_h2_alpn_rejected(start_server, tmp_path, ca):
    server = tls_server(start_server, tmp_path, ca, "127.0.0.1", alpn="http/1.1")
    result = driver(server.url, "--ca-file", ca_file(tmp_path, ca), "hello")
    assert result.returncode == 1
    assert "did not negotiate h2" in result.stdout
