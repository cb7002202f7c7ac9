"""Constants and helpers shared by the S3 tests and their fixtures.

They live here rather than in conftest.py because tests import them, and
several directories of the suite have a conftest module of that name."""

import hashlib
import random
import socket

MIB = 1024 * 1024
REGION = "us-east-1"
# Every AWS secret and session token given to the engine; the last test of
# the suite checks that none of them was ever printed.
AWS_SECRETS = set()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def incomplete_uploads(s3, bucket):
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def make_file(path, size, seed=0):
    """Write size bytes that differ in every MiB (so a misplaced part shows)
    and return their SHA-256."""
    block = random.Random(seed).randbytes(MIB)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        written = 0
        index = 0
        while written < size:
            chunk = index.to_bytes(8, "big") + block[8:]
            chunk = chunk[:size - written]
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            index += 1
    return digest.hexdigest()


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def object_sha256(s3, bucket, key):
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(4 * MIB):
        digest.update(chunk)
    return digest.hexdigest()
