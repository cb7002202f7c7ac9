"""Faults injected by the proxy between the engine and moto: retries,
re-signing, errors inside 200 responses, aborts, clock skew, corruption."""

import calendar
import re
import time

import pytest
from botocore.exceptions import ClientError
from s3helpers import MIB, file_sha256, incomplete_uploads, make_file, object_sha256
from faultproxy import (close_on_next_request, corrupt, cut_response, delay,
                        error_body, forward_then, reset, respond, respond_slowly)

SIZE = 21 * MIB  # five parts of 5 MiB: 5, 5, 5, 5 and 1


@pytest.fixture(params=["http", "https"])
def route(request, proxied_engine, proxy, tls_engine, tls_proxy):
    """(engine, proxy) over plain HTTP (signed payloads) or TLS (unsigned)."""
    if request.param == "http":
        return proxied_engine, proxy
    return tls_engine, tls_proxy


def part(n):
    return lambda r: r.operation == "UploadPart" and r.part_number == n


def op(name):
    return lambda r: r.operation == name


def default_checksum(proxy, record):
    """The header and value of the checksum sent by default: SHA-256 over
    plain HTTP, CRC32 over TLS."""
    if proxy.ssl_context is None:
        return "x-amz-checksum-sha256", record.sha256_b64
    return "x-amz-checksum-crc32", record.crc32_b64


def upload(engine, bucket, tmp_path, size=SIZE, key="k", extra=(), env=None, prefix=()):
    src = tmp_path / "src.bin"
    digest = make_file(src, size, seed=size)
    result = engine.run("put", "--part-size", "5", *extra, src, f"s3://{bucket}/{key}",
                        env=env, prefix=prefix)
    return result, digest


def assert_object_missing(s3, bucket, key="k"):
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key=key)
    assert caught.value.response["Error"]["Code"] == "404"


def test_slowdown_on_part_retried(route, s3, bucket, tmp_path):
    engine, proxy = route
    proxy.add_rule(part(2), respond(503, "SlowDown", "Please reduce your request rate."),
                   times=3)
    proxy.add_rule(part(2), respond(503, body=b""), times=1)

    put, digest = upload(engine, bucket, tmp_path)

    assert put.returncode == 0, put.stderr
    attempts = proxy.find("UploadPart", 2)
    assert len(attempts) == 5
    # Every retry sends the whole part again, with its checksum.
    assert [a.body_length for a in attempts] == [5 * MIB] * 5
    assert len({a.sha256 for a in attempts}) == 1
    header, value = default_checksum(proxy, attempts[0])
    assert attempts[0].headers[header] == value
    assert put.stderr.count("retrying") == 4
    assert "(part 2 of 5): HTTP 503 SlowDown: Please reduce your request rate." in put.stderr
    assert object_sha256(s3, bucket, "k") == digest
    assert incomplete_uploads(s3, bucket) == []


def test_retry_signed_with_fresh_date(proxied_engine, proxy, s3, bucket, tmp_path):
    # The first attempt waits past a second boundary before failing, so a
    # re-signed retry has a later x-amz-date.
    async def slow_failure(p, req):
        await delay(1.2)(p, req)
        return await respond(500, "InternalError", "We encountered an internal error.")(p, req)
    proxy.add_rule(part(1), slow_failure, times=1)

    put, digest = upload(proxied_engine, bucket, tmp_path)

    assert put.returncode == 0, put.stderr
    first, second = proxy.find("UploadPart", 1)
    assert second.headers["x-amz-date"] > first.headers["x-amz-date"]
    assert second.headers["authorization"] != first.headers["authorization"]
    assert second.headers["x-amz-content-sha256"] == second.sha256
    assert object_sha256(s3, bucket, "k") == digest


def test_part_failing_forever_aborts(proxied_engine, proxy, s3, bucket, tmp_path):
    proxy.add_rule(part(3), respond(500, "InternalError", "We encountered an internal error."),
                   times=None)

    put, _ = upload(proxied_engine, bucket, tmp_path, env={"MFMODAL_S3_MAX_ATTEMPTS": "3"})

    assert put.returncode == 1
    assert "UploadPart" in put.stderr
    assert "(part 3 of 5)" in put.stderr
    assert "InternalError" in put.stderr
    assert "after 3 attempts" in put.stderr
    assert re.search(r"multipart upload \S+ aborted", put.stderr)
    assert len(proxy.find("UploadPart", 3)) == 3
    assert len(proxy.find("AbortMultipartUpload")) == 1
    assert proxy.find("ListParts")[-1].status == 404
    assert proxy.find("CompleteMultipartUpload") == []
    assert incomplete_uploads(s3, bucket) == []
    assert_object_missing(s3, bucket)


def test_complete_error_in_200_retried(proxied_engine, proxy, s3, bucket, tmp_path):
    proxy.add_rule(op("CompleteMultipartUpload"), respond(
        200, body=error_body("InternalError", "We encountered an internal error.")))

    put, digest = upload(proxied_engine, bucket, tmp_path)

    assert put.returncode == 0, put.stderr
    first, second = proxy.find("CompleteMultipartUpload")
    assert first.answered_by == "rule"
    assert second.text == first.text  # the same upload ID and part list
    assert "HTTP 200 with an error in the body: InternalError" in put.stderr
    assert object_sha256(s3, bucket, "k") == digest
    assert incomplete_uploads(s3, bucket) == []


@pytest.mark.parametrize("code", ["InternalError", "SlowDown"])
def test_complete_padding_then_error_retried(proxied_engine, proxy, s3, bucket, tmp_path, code):
    # S3 may keep a Complete response alive with whitespace for minutes
    # before the result, which can still be an error.
    pieces = [b'<?xml version="1.0" encoding="UTF-8"?>\n'] + [b"  \n"] * 4 + [
        f"<Error><Code>{code}</Code><Message>try again</Message></Error>".encode()]
    proxy.add_rule(op("CompleteMultipartUpload"), respond_slowly(200, pieces, 0.5))

    put, digest = upload(proxied_engine, bucket, tmp_path,
                         env={"MFMODAL_S3_IO_TIMEOUT": "2"})

    assert put.returncode == 0, put.stderr
    assert len(proxy.find("CompleteMultipartUpload")) == 2
    assert object_sha256(s3, bucket, "k") == digest


@pytest.mark.parametrize("body,expected", [
    (error_body("InvalidPart", "One or more of the specified parts could not be found."),
     "HTTP 200 with an error in the body: InvalidPart"),
    (b"", "without the expected <CompleteMultipartUploadResult> in the body (empty body)"),
    (b'<?xml version="1.0"?><CompleteMultipartUploadResult><Loca',
     "HTTP 200 with an incomplete <CompleteMultipartUploadResult> body"),
    (b"<html><body><h1>502 Bad Gateway</h1></body></html>",
     "without the expected <CompleteMultipartUploadResult> in the body (<html>"),
], ids=["error-code", "empty", "truncated", "html"])
def test_complete_bad_200_fails_and_aborts(proxied_engine, proxy, s3, bucket, tmp_path,
                                           body, expected):
    proxy.add_rule(op("CompleteMultipartUpload"), respond(200, body=body), times=None)

    put, _ = upload(proxied_engine, bucket, tmp_path)

    assert put.returncode == 1
    assert "CompleteMultipartUpload" in put.stderr
    assert expected in put.stderr
    assert len(proxy.find("CompleteMultipartUpload")) == 1
    assert len(proxy.find("AbortMultipartUpload")) == 1
    assert incomplete_uploads(s3, bucket) == []
    assert_object_missing(s3, bucket)


def test_abort_retried_until_it_works(proxied_engine, proxy, s3, bucket, tmp_path):
    proxy.add_rule(part(2), respond(403, "AccessDenied", "Access Denied"), times=None)
    proxy.add_rule(op("AbortMultipartUpload"),
                   respond(503, "SlowDown", "Please reduce your request rate."), times=2)

    put, _ = upload(proxied_engine, bucket, tmp_path)

    assert put.returncode == 1
    assert "AccessDenied" in put.stderr
    assert "Check that the credentials" in put.stderr
    assert len(proxy.find("UploadPart", 2)) == 1  # a 403 is not retried
    assert len(proxy.find("AbortMultipartUpload")) == 3
    assert re.search(r"multipart upload \S+ aborted", put.stderr)
    assert incomplete_uploads(s3, bucket) == []


def test_abort_failure_names_upload(proxied_engine, proxy, s3, bucket, tmp_path):
    proxy.add_rule(part(2), respond(403, "AccessDenied", "Access Denied"), times=None)
    proxy.add_rule(op("AbortMultipartUpload"),
                   respond(500, "InternalError", "We encountered an internal error."),
                   times=None)

    put, _ = upload(proxied_engine, bucket, tmp_path, env={"MFMODAL_S3_MAX_ATTEMPTS": "2"})

    assert put.returncode == 1
    left = incomplete_uploads(s3, bucket)
    assert len(left) == 1
    assert "the multipart upload could not be aborted" in put.stderr
    assert f"--upload-id {left[0]['UploadId']}" in put.stderr
    assert "aws s3api abort-multipart-upload" in put.stderr
    assert "AbortIncompleteMultipartUpload" in put.stderr


def test_connection_reset_on_part(route, s3, bucket, tmp_path):
    engine, proxy = route
    proxy.add_rule(part(2), reset())

    put, digest = upload(engine, bucket, tmp_path)

    assert put.returncode == 0, put.stderr
    assert [a.answered_by for a in proxy.find("UploadPart", 2)] == ["reset", "moto"]
    assert object_sha256(s3, bucket, "k") == digest


def test_stale_keepalive_resent_quietly(route, s3, bucket, tmp_path):
    # With one part in flight every request reuses one connection, which
    # the server closes once part 2 has arrived on it.
    engine, proxy = route
    proxy.add_rule(part(1), close_on_next_request())

    put, digest = upload(engine, bucket, tmp_path, extra=("--parallel", "1"))

    assert put.returncode == 0, put.stderr
    assert put.stderr == ""
    (first_part,) = proxy.find("UploadPart", 1)
    closed, resent = proxy.find("UploadPart", 2)
    assert first_part.status == 200
    assert closed.answered_by == "closed"
    assert closed.connection == first_part.connection
    assert resent.status == 200
    assert resent.connection != closed.connection
    assert resent.body_length == closed.body_length
    assert resent.sha256 == closed.sha256
    assert [r.answered_by for r in proxy.records].count("closed") == 1
    assert object_sha256(s3, bucket, "k") == digest
    assert incomplete_uploads(s3, bucket) == []


def test_cut_mid_body(route, s3, bucket, tmp_path):
    engine, proxy = route
    proxy.add_cut(part(4))

    put, digest = upload(engine, bucket, tmp_path)

    assert put.returncode == 0, put.stderr
    assert len(proxy.find("UploadPart", 4)) == 2
    assert object_sha256(s3, bucket, "k") == digest
    assert incomplete_uploads(s3, bucket) == []


@pytest.mark.parametrize("checksum,header", [
    ("crc32", "x-amz-checksum-crc32"),
    ("md5", "content-md5"),
    ("sha256", "x-amz-checksum-sha256"),
])
def test_corrupted_part_rejected_and_resent(route, s3, bucket, tmp_path, checksum, header):
    engine, proxy = route
    proxy.add_rule(part(2), corrupt())

    put, digest = upload(engine, bucket, tmp_path, extra=("--checksum", checksum))

    assert put.returncode == 0, put.stderr
    first, second = proxy.find("UploadPart", 2)
    assert header in first.headers
    assert second.headers[header] == first.headers[header]
    signed = first.headers["x-amz-content-sha256"] != "UNSIGNED-PAYLOAD"
    # Over HTTP the signed SHA-256 catches the damage first; over TLS the
    # part checksum does.
    assert first.error_code == ("XAmzContentSHA256Mismatch" if signed else "BadDigest")
    assert second.status == 200
    assert object_sha256(s3, bucket, "k") == digest


def test_corrupted_single_put_rejected_and_resent(route, s3, bucket, tmp_path):
    engine, proxy = route
    proxy.add_rule(op("PutObject"), corrupt())

    put, digest = upload(engine, bucket, tmp_path, size=3 * MIB)

    assert put.returncode == 0, put.stderr
    assert [r.status for r in proxy.find("PutObject")] == [400, 200]
    assert object_sha256(s3, bucket, "k") == digest


def test_clock_skew_corrected(proxied_engine, proxy, s3, bucket, tmp_path):
    proxy.clock_offset = 20 * 60  # the "server" runs 20 minutes ahead

    put, digest = upload(proxied_engine, bucket, tmp_path)

    assert put.returncode == 0, put.stderr
    skewed = [r for r in proxy.records if r.error_code == "RequestTimeTooSkewed"]
    assert [r.operation for r in skewed] == ["CreateMultipartUpload"]
    offset = int(re.search(r"server's clock is \+(\d+) s", put.stderr).group(1))
    assert abs(offset - 1200) <= 2
    later = [r for r in proxy.records if not r.error_code]
    assert {r.operation for r in later} >= {"UploadPart", "CompleteMultipartUpload"}
    now = time.time()
    for record in later:
        sent = calendar.timegm(time.strptime(record.headers["x-amz-date"], "%Y%m%dT%H%M%SZ"))
        assert abs(sent - now - 1200) < 120
    assert object_sha256(s3, bucket, "k") == digest


def test_clock_skew_from_date_header(proxied_engine, proxy, s3, bucket, tmp_path):
    # An error without <ServerTime>: the client must take the Date header.
    proxy.clock_offset = 20 * 60
    proxy.add_rule(op("CreateMultipartUpload"), respond(
        403, "RequestTimeTooSkewed",
        "The difference between the request time and the current time is too large."))

    put, digest = upload(proxied_engine, bucket, tmp_path)

    assert put.returncode == 0, put.stderr
    offset = int(re.search(r"server's clock is \+(\d+) s", put.stderr).group(1))
    assert abs(offset - 1200) <= 2
    assert [r.status for r in proxy.find("CreateMultipartUpload")] == [403, 200]
    assert object_sha256(s3, bucket, "k") == digest


def test_clock_skew_with_parts_in_flight(proxied_engine, proxy, s3, bucket, tmp_path):
    # The server's clock jumps once the upload exists: the four parts in
    # flight are all rejected, and each is sent once more, corrected.
    def jump(resp):
        proxy.clock_offset = 20 * 60
    proxy.add_rule(op("CreateMultipartUpload"), forward_then(jump))

    put, digest = upload(proxied_engine, bucket, tmp_path, extra=("--parallel", "4"))

    assert put.returncode == 0, put.stderr
    skewed = [r.part_number for r in proxy.records if r.error_code == "RequestTimeTooSkewed"]
    assert sorted(skewed) == [1, 2, 3, 4]
    for number in range(1, 5):
        assert [r.status for r in proxy.find("UploadPart", number)] == [403, 200]
    assert object_sha256(s3, bucket, "k") == digest


def test_unquoted_etag_kept_as_received(proxied_engine, proxy, s3, bucket, tmp_path):
    def unquote(resp):
        resp.headers = [(k, v.strip('"') if k.lower() == "etag" else v)
                        for k, v in resp.headers]
    proxy.add_rule(op("UploadPart"), forward_then(unquote), times=None)

    put, digest = upload(proxied_engine, bucket, tmp_path)

    assert put.returncode == 0, put.stderr
    complete = proxy.find("CompleteMultipartUpload")[0].text
    numbers = [int(n) for n in re.findall(r"<PartNumber>(\d+)</PartNumber>", complete)]
    assert numbers == [1, 2, 3, 4, 5]
    etags = re.findall(r"<ETag>([^<]*)</ETag>", complete)
    assert len(etags) == 5
    assert all(re.fullmatch(r"[0-9a-f]{32}", e) for e in etags)
    assert "&quot;" not in complete
    assert len(re.findall(r"<ChecksumSHA256>[A-Za-z0-9+/]{43}=</ChecksumSHA256>", complete)) == 5
    assert object_sha256(s3, bucket, "k") == digest


@pytest.mark.parametrize("checksum,header", [
    ("crc32", "x-amz-checksum-crc32"),
    ("sha256", "x-amz-checksum-sha256"),
])
def test_checksum_echo_mismatch_fails(proxied_engine, proxy, s3, bucket, tmp_path,
                                      checksum, header):
    # The server accepted part 2 but returns a checksum other than the one
    # sent: the part was damaged on the way, so the upload must not complete.
    def wrong_echo(resp):
        resp.headers.append((header, "AAAAAA=="))
    proxy.add_rule(part(2), forward_then(wrong_echo))

    put, _ = upload(proxied_engine, bucket, tmp_path, extra=("--checksum", checksum))

    assert put.returncode == 1
    (sent,) = proxy.find("UploadPart", 2)
    assert (f"(part 2 of 5): the server's {checksum.upper()} AAAAAA== differs "
            f"from the file's {sent.headers[header]}") in put.stderr
    assert proxy.find("CompleteMultipartUpload") == []
    assert len(proxy.find("AbortMultipartUpload")) == 1
    assert incomplete_uploads(s3, bucket) == []
    assert_object_missing(s3, bucket)


def test_quoted_etag_written_literally(proxied_engine, proxy, s3, bucket, tmp_path):
    put, _ = upload(proxied_engine, bucket, tmp_path)

    assert put.returncode == 0, put.stderr
    complete = proxy.find("CompleteMultipartUpload")[0].text
    assert re.search(r'<ETag>"[0-9a-f]{32}"</ETag>', complete)
    assert "&quot;" not in complete


def test_stalled_part_times_out_and_is_retried(proxied_engine, proxy, s3, bucket, tmp_path):
    proxy.add_rule(part(1), delay(3))

    put, digest = upload(proxied_engine, bucket, tmp_path, env={"MFMODAL_S3_IO_TIMEOUT": "1"})

    assert put.returncode == 0, put.stderr
    assert "no progress reading the response" in put.stderr
    assert len(proxy.find("UploadPart", 1)) == 2
    assert object_sha256(s3, bucket, "k") == digest


def test_interrupt_aborts_upload(proxied_engine, proxy, s3, bucket, tmp_path):
    proxy.add_rule(op("UploadPart"), delay(3), times=None)

    # timeout(1) sends SIGINT after 1 s, with every part still in flight.
    put, _ = upload(proxied_engine, bucket, tmp_path,
                    prefix=("timeout", "--preserve-status", "-s", "INT", "1"))

    assert put.returncode == 1
    assert "interrupted by signal 2: cancelling the upload" in put.stderr
    assert "cancelled" in put.stderr
    assert re.search(r"multipart upload \S+ aborted", put.stderr)
    assert len(proxy.find("AbortMultipartUpload")) == 1
    assert incomplete_uploads(s3, bucket) == []


def test_stored_size_checked(proxied_engine, proxy, s3, bucket, tmp_path):
    def shrink(resp):
        resp.headers = [(k, str(int(v) - 1) if k.lower() == "content-length" else v)
                        for k, v in resp.headers]
    proxy.add_rule(op("HeadObject"), forward_then(shrink))

    put, _ = upload(proxied_engine, bucket, tmp_path)

    assert put.returncode == 1
    assert f"the stored object has {SIZE - 1} bytes but the file has {SIZE}" in put.stderr


def test_get_retried_after_slowdown(proxied_engine, proxy, s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    digest = make_file(src, 3 * MIB + 5)
    s3.upload_file(str(src), bucket, "g")
    proxy.add_rule(op("GetObject"), respond(503, "SlowDown", "Please reduce your request rate."))
    dst = tmp_path / "dst.bin"

    get = proxied_engine.run("get", f"s3://{bucket}/g", dst)

    assert get.returncode == 0, get.stderr
    assert file_sha256(dst) == digest


def test_get_cut_short_is_retried(route, s3, bucket, tmp_path):
    engine, proxy = route
    src = tmp_path / "src.bin"
    digest = make_file(src, 3 * MIB + 5)
    s3.upload_file(str(src), bucket, "g")
    proxy.add_rule(op("GetObject"), cut_response(0.5))
    dst = tmp_path / "dst.bin"

    get = engine.run("get", f"s3://{bucket}/g", dst)

    assert get.returncode == 0, get.stderr
    assert "with 1572867 body bytes missing" in get.stderr
    assert len(proxy.find("GetObject")) == 2
    assert dst.stat().st_size == 3 * MIB + 5
    assert file_sha256(dst) == digest
