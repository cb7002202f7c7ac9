"""Errors that retrying cannot fix: each one reported once, with the S3 error
code and message, the bucket and key, and what to check."""

import socket

import boto3
import pytest
from botocore.exceptions import ClientError
from s3helpers import MIB, REGION, incomplete_uploads, make_file


def test_moto_rejects_wrong_secret(moto):
    """The tests below mean something only if moto checks signatures."""
    bad = boto3.client("s3", endpoint_url=moto.endpoint, region_name=REGION,
                       aws_access_key_id=moto.key_id, aws_secret_access_key="wrong")
    with pytest.raises(ClientError) as caught:
        bad.list_buckets()
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_wrong_secret(engine, s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100)
    wrong = "wrongSecretKey0123456789abcdefWRONG0123"

    put = engine.run("put", src, f"s3://{bucket}/dir/k.bin",
                     env={"AWS_SECRET_ACCESS_KEY": wrong})

    assert put.returncode == 1
    assert "SignatureDoesNotMatch" in put.stderr
    assert f"s3://{bucket}/dir/k.bin" in put.stderr
    assert "PutObject" in put.stderr
    assert "Check the secret access key" in put.stderr
    assert wrong not in put.stderr + put.stdout
    assert "retrying" not in put.stderr  # a 403 is final
    assert put.stderr.count("\n") == 1


def test_wrong_secret_multipart(engine, s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    make_file(src, 6 * MIB)

    put = engine.run("put", "--part-size", "5", src, f"s3://{bucket}/k",
                     env={"AWS_SECRET_ACCESS_KEY": "another-wrong-secret"})

    assert put.returncode == 1
    assert "CreateMultipartUpload" in put.stderr
    assert "SignatureDoesNotMatch" in put.stderr
    assert incomplete_uploads(s3, bucket) == []


def test_unknown_access_key(engine, bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")

    put = engine.run("put", src, f"s3://{bucket}/k",
                     env={"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000"})

    assert put.returncode == 1
    assert "InvalidAccessKeyId" in put.stderr
    assert "Check the access key ID" in put.stderr


def test_wrong_session_token(engine, session_credentials, bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")

    put = engine.run("put", src, f"s3://{bucket}/k", env={
        "AWS_ACCESS_KEY_ID": session_credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": session_credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": "not-the-session-token"})

    assert put.returncode == 1
    assert "InvalidToken" in put.stderr
    assert "session token" in put.stderr
    assert session_credentials["SecretAccessKey"] not in put.stderr


def test_missing_bucket(engine, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")

    put = engine.run("put", src, "s3://no-such-bucket-mfmodal/a/b.txt")

    assert put.returncode == 1
    assert "NoSuchBucket" in put.stderr
    assert "s3://no-such-bucket-mfmodal/a/b.txt" in put.stderr
    assert "The specified bucket does not exist" in put.stderr
    assert "Check the bucket name" in put.stderr
    assert "AWS_ENDPOINT_URL" in put.stderr


def test_missing_key_get(engine, bucket, tmp_path):
    dst = tmp_path / "out.bin"

    get = engine.run("get", f"s3://{bucket}/nope/missing.txt", dst)

    assert get.returncode == 1
    assert "NoSuchKey" in get.stderr
    assert f"s3://{bucket}/nope/missing.txt" in get.stderr
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_missing_key_head(engine, bucket):
    head = engine.run("head", f"s3://{bucket}/missing")

    assert head.returncode == 1
    assert "HTTP 404" in head.stderr
    assert "No such key, or no such bucket" in head.stderr
    assert head.stdout == ""


def test_missing_credentials(engine, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")

    put = engine.run("put", src, "s3://b/k", env={
        "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "HOME": str(tmp_path)})

    assert put.returncode == 2
    assert "no AWS credentials found" in put.stderr
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in put.stderr
    assert "AWS_PROFILE" in put.stderr


def test_missing_profile(engine, tmp_path):
    put = engine.run("head", "s3://b/k", env={
        "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
        "AWS_PROFILE": "nosuchprofile"})

    assert put.returncode == 2
    assert "'nosuchprofile'" in put.stderr
    assert "not found" in put.stderr


def test_missing_file(engine, bucket, tmp_path):
    put = engine.run("put", tmp_path / "absent.bin", f"s3://{bucket}/k")

    assert put.returncode == 1
    assert "cannot open the file" in put.stderr
    assert "absent.bin" in put.stderr


@pytest.mark.parametrize("args,message", [
    (["put", "--part-size", "4", "f", "s3://b/k"], "invalid --part-size '4'"),
    (["put", "--parallel", "0", "f", "s3://b/k"], "invalid --parallel '0'"),
    (["put", "--checksum", "sha1", "f", "s3://b/k"], "invalid --checksum 'sha1'"),
    (["put", "f", "b/k"], "invalid S3 URI 'b/k'"),
    (["put", "f", "s3://b/"], "invalid S3 URI 's3://b/'"),
    (["get", "s3://b/k"], "usage: s3 get"),
    (["head", "--range", "bytes=0-1", "s3://b/k"], "--range applies to s3 get only"),
    (["frobnicate"], "unknown s3 command 'frobnicate'"),
])
def test_usage_errors(engine, args, message):
    result = engine.run(*args)

    assert result.returncode == 2
    assert message in result.stderr


def test_invalid_endpoint(engine):
    result = engine.run("head", "s3://b/k", env={"AWS_ENDPOINT_URL": "ftp://host"})

    assert result.returncode == 2
    assert "ftp://host" in result.stderr
    assert "AWS_ENDPOINT_URL" in result.stderr


def test_invalid_retry_setting(engine):
    result = engine.run("head", "s3://b/k", env={"MFMODAL_S3_MAX_ATTEMPTS": "zero"})

    assert result.returncode == 2
    assert "invalid MFMODAL_S3_MAX_ATTEMPTS 'zero'" in result.stderr


def test_connection_refused(engine, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed

    result = engine.run("head", "s3://b/k", env={
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "MFMODAL_S3_MAX_ATTEMPTS": "2"})

    assert result.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in result.stderr
    assert "after 2 attempts" in result.stderr
    assert "retrying" in result.stderr


def test_untrusted_certificate(engine, tls_proxy, bucket):
    result = engine.run("head", f"s3://{bucket}/k", env={
        "AWS_ENDPOINT_URL": tls_proxy.url, "MFMODAL_CA_FILE": None,
        "SSL_CERT_FILE": "/nonexistent-ca.pem"})

    assert result.returncode == 1
    assert "certificate verification failed" in result.stderr
    assert "retrying" not in result.stderr
