"""Uploads and downloads through "mfmodal-engine s3" against moto, compared
with what boto3 reads back, over plain HTTP and over TLS."""

import os
import re
import shlex

import pytest
from s3helpers import MIB, file_sha256, incomplete_uploads, make_file, object_sha256
from faultproxy import delay

from enginetest import run_program

SIZES = [0, 1, 5 * MIB - 1, 5 * MIB, 5 * MIB + 1, 64 * MIB + 7]
SIZE_IDS = ["0B", "1B", "5MiB-1", "5MiB", "5MiB+1", "64MiB+7"]


def expected_parts(size, part_size):
    """0 for a single PutObject, else the multipart part count."""
    return 0 if size < part_size else -(-size // part_size)


def check_roundtrip(engine, s3, bucket, tmp_path, size, key="data/object.bin"):
    src = tmp_path / "src.bin"
    digest = make_file(src, size, seed=size)

    put = engine.run("put", "--part-size", "5", src, f"s3://{bucket}/{key}")
    assert put.returncode == 0, put.stderr
    assert put.stdout == ""
    assert put.stderr == ""  # not a terminal: no progress, no summary

    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == size
    parts = expected_parts(size, 5 * MIB)
    if parts:
        assert head["ETag"].endswith(f'-{parts}"')
    else:
        assert "-" not in head["ETag"]
    assert object_sha256(s3, bucket, key) == digest

    dst = tmp_path / "dst.bin"
    get = engine.run("get", f"s3://{bucket}/{key}", dst)
    assert get.returncode == 0, get.stderr
    assert get.stdout == ""
    assert get.stderr == ""
    assert dst.stat().st_size == size
    assert file_sha256(dst) == digest
    assert incomplete_uploads(s3, bucket) == []


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_roundtrip_http(engine, s3, bucket, tmp_path, size):
    check_roundtrip(engine, s3, bucket, tmp_path, size)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_roundtrip_https(tls_engine, s3, bucket, tmp_path, size):
    check_roundtrip(tls_engine, s3, bucket, tmp_path, size)


@pytest.mark.parametrize("key", [
    "dir with spaces/file name.txt",
    "unicod\u00e9/\u65e5\u672c\u8a9e/\u043a\u043b\u044e\u0447.bin",
    "a+b=c~d/x+y.txt",
    "plus+only",
], ids=["spaces", "unicode", "plus-equals-tilde", "plus"])
def test_key_encoding(engine, s3, bucket, tmp_path, key):
    src = tmp_path / "src.bin"
    digest = make_file(src, 6 * MIB + 3, seed=1)

    put = engine.run("put", "--part-size", "5", src, f"s3://{bucket}/{key}")
    assert put.returncode == 0, put.stderr
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == [key]
    assert object_sha256(s3, bucket, key) == digest

    head = engine.run("head", f"s3://{bucket}/{key}")
    assert head.returncode == 0, head.stderr
    assert f"size: {6 * MIB + 3}\n" in head.stdout

    dst = tmp_path / "dst.bin"
    get = engine.run("get", f"s3://{bucket}/{key}", dst)
    assert get.returncode == 0, get.stderr
    assert file_sha256(dst) == digest


def test_key_encoding_https(tls_engine, s3, bucket, tmp_path):
    key = "tls dir/caf\u00e9+1=2.txt"
    src = tmp_path / "src.bin"
    digest = make_file(src, 1000, seed=2)

    put = tls_engine.run("put", src, f"s3://{bucket}/{key}")
    assert put.returncode == 0, put.stderr
    assert object_sha256(s3, bucket, key) == digest


def test_head_prints_metadata(engine, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k.txt", Body=b"hello", ContentType="text/plain")
    head = engine.run("head", f"s3://{bucket}/k.txt")

    assert head.returncode == 0, head.stderr
    lines = dict(line.split(": ", 1) for line in head.stdout.splitlines())
    assert lines["size"] == "5"
    assert lines["etag"] == '"5d41402abc4b2a76b9719d911017c592"'
    assert lines["content-type"] == "text/plain"
    assert lines["last-modified"].endswith("GMT")


def test_get_range(engine, s3, bucket, tmp_path):
    data = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key="r.bin", Body=data)
    dst = tmp_path / "part.bin"

    get = engine.run("get", "--range", "bytes=100-199", f"s3://{bucket}/r.bin", dst)

    assert get.returncode == 0, get.stderr
    assert dst.read_bytes() == data[100:200]


def test_get_replaces_file_whole(engine, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="new.txt", Body=b"new contents")
    dst = tmp_path / "out.txt"
    dst.write_bytes(b"old contents that are longer")

    get = engine.run("get", f"s3://{bucket}/new.txt", dst)

    assert get.returncode == 0, get.stderr
    assert dst.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_ls_and_rm(engine, s3, bucket):
    for key in ("logs/a.txt", "logs/b c.txt", "other/x"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"12345")

    ls = engine.run("ls", f"s3://{bucket}/logs/")
    assert ls.returncode == 0, ls.stderr
    keys = [line.split("  ")[-1] for line in ls.stdout.splitlines()]
    assert keys == ["logs/a.txt", "logs/b c.txt"]
    assert all(line.split()[0] == "5" for line in ls.stdout.splitlines())

    rm = engine.run("rm", f"s3://{bucket}/logs/a.txt")
    assert rm.returncode == 0, rm.stderr
    remaining = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert remaining == ["logs/b c.txt", "other/x"]


def test_ls_pages(engine, s3, bucket):
    # moto returns at most 1,000 keys per page, so 1,005 need two pages.
    for i in range(1005):
        s3.put_object(Bucket=bucket, Key=f"many/{i:05d}", Body=b"")

    ls = engine.run("ls", f"s3://{bucket}/many/")

    assert ls.returncode == 0, ls.stderr
    keys = [line.split("  ")[-1] for line in ls.stdout.splitlines()]
    assert len(keys) == 1005
    assert keys[0] == "many/00000"
    assert keys[-1] == "many/01004"


def test_uploads_lists_incomplete(engine, s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="pending/obj")["UploadId"]

    listing = engine.run("uploads", f"s3://{bucket}/pending/")

    assert listing.returncode == 0, listing.stderr
    fields = listing.stdout.split()
    assert fields[0] == upload_id
    assert fields[-1] == "pending/obj"


def test_parallel_parts_share_connections(proxied_engine, proxy, s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    make_file(src, 40 * MIB + 1, seed=3)

    put = proxied_engine.run("put", "--part-size", "5", "--parallel", "3", src,
                             f"s3://{bucket}/k")

    assert put.returncode == 0, put.stderr
    parts = proxy.find("UploadPart")
    assert sorted(r.part_number for r in parts) == list(range(1, 10))
    # Twelve requests (create, nine parts, complete, HEAD) share keep-alive
    # connections: one per part in flight, with one to spare.
    assert len(proxy.records) == 12
    assert proxy.connections <= 4


def completed_checksums(complete, algorithm):
    """The (part number, checksum) pairs that a CompleteMultipartUpload body
    lists for algorithm, such as "SHA256"."""
    return [(int(number), value) for number, value in re.findall(
        rf"<PartNumber>(\d+)</PartNumber><ETag>[^<]*</ETag>"
        rf"<Checksum{algorithm}>([^<]*)</Checksum{algorithm}>", complete.text)]


def test_payload_hash_and_checksums_http(proxied_engine, proxy, s3, bucket, tmp_path):
    # The default over plain HTTP: the SigV4 payload hash and the SHA-256
    # checksum come from one digest, and no CRC32 is sent.
    src = tmp_path / "src.bin"
    make_file(src, 11 * MIB, seed=4)

    put = proxied_engine.run("put", "--part-size", "5", src, f"s3://{bucket}/k")

    assert put.returncode == 0, put.stderr
    create = proxy.find("CreateMultipartUpload")[0]
    assert create.headers["x-amz-checksum-algorithm"] == "SHA256"
    parts = sorted(proxy.find("UploadPart"), key=lambda r: r.part_number)
    assert [r.body_length for r in parts] == [5 * MIB, 5 * MIB, 1 * MIB]
    for record in parts:
        assert record.headers["x-amz-content-sha256"] == record.sha256
        assert record.headers["x-amz-checksum-sha256"] == record.sha256_b64
        assert "x-amz-checksum-crc32" not in record.headers
        assert "x-amz-date" in record.headers["authorization"]
    complete = proxy.find("CompleteMultipartUpload")[0]
    assert complete.headers["x-amz-content-sha256"] == complete.sha256
    assert completed_checksums(complete, "SHA256") == [
        (r.part_number, r.sha256_b64) for r in parts]
    assert "ChecksumCRC32" not in complete.text


def test_unsigned_payload_over_tls(tls_engine, tls_proxy, s3, bucket, tmp_path):
    # The default over TLS: CRC32, since no SHA-256 is computed for the
    # unsigned payload.
    src = tmp_path / "src.bin"
    make_file(src, 6 * MIB, seed=5)

    put = tls_engine.run("put", "--part-size", "5", src, f"s3://{bucket}/k")

    assert put.returncode == 0, put.stderr
    create = tls_proxy.find("CreateMultipartUpload")[0]
    assert create.headers["x-amz-checksum-algorithm"] == "CRC32"
    parts = sorted(tls_proxy.find("UploadPart"), key=lambda r: r.part_number)
    assert len(parts) == 2
    for record in parts:
        assert record.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert record.headers["x-amz-checksum-crc32"] == record.crc32_b64
        assert "x-amz-checksum-sha256" not in record.headers
    complete = tls_proxy.find("CompleteMultipartUpload")[0]
    assert completed_checksums(complete, "CRC32") == [
        (r.part_number, r.crc32_b64) for r in parts]


@pytest.mark.parametrize("size", [3 * MIB, 11 * MIB], ids=["single", "multipart"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_sha256_checksum_roundtrip(proxied_engine, proxy, tls_engine, tls_proxy, s3,
                                   bucket, tmp_path, scheme, size):
    engine, used = (proxied_engine, proxy) if scheme == "http" else (tls_engine, tls_proxy)
    src = tmp_path / "src.bin"
    digest = make_file(src, size, seed=11)

    put = engine.run("put", "--part-size", "5", "--checksum", "sha256", src,
                     f"s3://{bucket}/k")

    assert put.returncode == 0, put.stderr
    assert put.stderr == ""
    bodies = sorted(used.find("UploadPart") + used.find("PutObject"),
                    key=lambda r: r.part_number or 0)
    assert len(bodies) == (1 if size < 5 * MIB else 3)
    for record in bodies:
        assert record.status == 200
        assert record.headers["x-amz-checksum-sha256"] == record.sha256_b64
        assert "x-amz-checksum-crc32" not in record.headers
        # Over TLS the checksum is computed, but the payload stays unsigned.
        payload = record.sha256 if scheme == "http" else "UNSIGNED-PAYLOAD"
        assert record.headers["x-amz-content-sha256"] == payload
    if size >= 5 * MIB:
        create = used.find("CreateMultipartUpload")[0]
        assert create.headers["x-amz-checksum-algorithm"] == "SHA256"
        complete = used.find("CompleteMultipartUpload")[0]
        assert completed_checksums(complete, "SHA256") == [
            (r.part_number, r.sha256_b64) for r in bodies]
    assert object_sha256(s3, bucket, "k") == digest

    dst = tmp_path / "dst.bin"
    get = engine.run("get", f"s3://{bucket}/k", dst)
    assert get.returncode == 0, get.stderr
    assert file_sha256(dst) == digest


def test_explicit_crc32_over_http(proxied_engine, proxy, s3, bucket, tmp_path):
    # A choice made in the environment wins over the default for the scheme.
    src = tmp_path / "src.bin"
    digest = make_file(src, 6 * MIB, seed=12)

    put = proxied_engine.run("put", "--part-size", "5", src, f"s3://{bucket}/k",
                             env={"MFMODAL_S3_CHECKSUM": "crc32"})

    assert put.returncode == 0, put.stderr
    create = proxy.find("CreateMultipartUpload")[0]
    assert create.headers["x-amz-checksum-algorithm"] == "CRC32"
    parts = proxy.find("UploadPart")
    assert len(parts) == 2
    for record in parts:
        assert record.headers["x-amz-checksum-crc32"] == record.crc32_b64
        assert "x-amz-checksum-sha256" not in record.headers
        assert record.headers["x-amz-content-sha256"] == record.sha256
    assert object_sha256(s3, bucket, "k") == digest


def test_checksum_option_overrides_environment(tls_engine, tls_proxy, s3, bucket,
                                               tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"checksum option")

    put = tls_engine.run("put", "--checksum", "auto", src, f"s3://{bucket}/k",
                         env={"MFMODAL_S3_CHECKSUM": "md5"})

    assert put.returncode == 0, put.stderr
    (record,) = tls_proxy.find("PutObject")
    assert record.headers["x-amz-checksum-crc32"] == record.crc32_b64
    assert "content-md5" not in record.headers


def test_md5_checksum_option(proxied_engine, proxy, s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    make_file(src, 6 * MIB, seed=6)

    put = proxied_engine.run("put", "--part-size", "5", "--checksum", "md5", src,
                             f"s3://{bucket}/k")

    assert put.returncode == 0, put.stderr
    parts = proxy.find("UploadPart")
    assert len(parts) == 2
    for record in parts:
        assert record.headers["content-md5"] == record.md5_b64
        assert "x-amz-checksum-crc32" not in record.headers
        assert "x-amz-checksum-sha256" not in record.headers
    assert "x-amz-checksum-algorithm" not in proxy.find("CreateMultipartUpload")[0].headers


def test_part_size_grows_past_max_parts(proxied_engine, proxy, s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    digest = make_file(src, 64 * MIB + 7, seed=7)

    # With at most 4 parts, 5 MiB parts cannot hold 64 MiB + 7 bytes: the
    # part size grows to 17 MiB, the smallest whole MiB that fits.
    put = proxied_engine.run("put", "--part-size", "5", src, f"s3://{bucket}/k",
                             env={"MFMODAL_S3_MAX_PARTS": "4"})

    assert put.returncode == 0, put.stderr
    parts = sorted(proxy.find("UploadPart"), key=lambda r: r.part_number)
    assert [r.part_number for r in parts] == [1, 2, 3, 4]
    assert [r.body_length for r in parts] == [17 * MIB] * 3 + [64 * MIB + 7 - 51 * MIB]
    assert object_sha256(s3, bucket, "k") == digest


def test_session_token_credentials(engine, session_credentials, s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    digest = make_file(src, 6 * MIB, seed=8)
    creds = {"AWS_ACCESS_KEY_ID": session_credentials["AccessKeyId"],
             "AWS_SECRET_ACCESS_KEY": session_credentials["SecretAccessKey"],
             "AWS_SESSION_TOKEN": session_credentials["SessionToken"]}

    put = engine.run("put", "--part-size", "5", src, f"s3://{bucket}/k", env=creds)

    assert put.returncode == 0, put.stderr
    assert object_sha256(s3, bucket, "k") == digest


def test_profile_from_credentials_file(engine, moto, s3, bucket, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[other]\naws_access_key_id = {moto.key_id}\n"
                           f"aws_secret_access_key = {moto.secret}\n")
    config = tmp_path / "config"
    config.write_text("[profile other]\nregion = us-east-1\n")
    src = tmp_path / "src.bin"
    src.write_bytes(b"from a profile")

    put = engine.run("put", src, f"s3://{bucket}/p", env={
        "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_REGION": None,
        "AWS_PROFILE": "other", "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(config)})

    assert put.returncode == 0, put.stderr
    assert s3.get_object(Bucket=bucket, Key="p")["Body"].read() == b"from a profile"


def test_progress_on_terminal(proxied_engine, proxy, s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    make_file(src, 12 * MIB, seed=9)
    # Slow parts, so the upload lasts long enough for progress lines.
    proxy.add_rule(lambda r: r.operation == "UploadPart", delay(0.6), times=None)
    command = [str(proxied_engine.program), "s3", "put", "--part-size", "5",
               "--parallel", "1", str(src), f"s3://{bucket}/k"]

    # script(1) gives the engine a terminal and copies what it shows to
    # standard output.
    result = run_program(["script", "-q", "-e", "-c", shlex.join(command), "/dev/null"],
                         proxied_engine.env())

    assert result.returncode == 0, result.stdout
    assert re.search(r"\d+(\.\d)? (B|KiB|MiB) / 12\.0 MiB  [\d.]+ (B|KiB|MiB)/s  "
                     r"\d+:\d\d left", result.stdout)
    assert re.search(r"uploaded .*src\.bin to s3://.*/k: 12\.0 MiB in [\d.]+ s", result.stdout)


@pytest.mark.slow
def test_one_gib_roundtrip(engine, s3, bucket, tmp_path):
    size = 1024 * MIB
    src = tmp_path / "big.bin"
    digest = make_file(src, size, seed=10)

    put = engine.run("put", src, f"s3://{bucket}/big", timeout=600)
    assert put.returncode == 0, put.stderr
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == size
    assert head["ETag"].endswith('-128"')  # 8 MiB parts by default
    assert object_sha256(s3, bucket, "big") == digest

    dst = tmp_path / "big.out"
    get = engine.run("get", f"s3://{bucket}/big", dst, timeout=600)
    assert get.returncode == 0, get.stderr
    assert file_sha256(dst) == digest
    dst.unlink()
    src.unlink()
    s3.delete_object(Bucket=bucket, Key="big")
