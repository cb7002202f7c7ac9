"""Fixtures for the S3 tests: moto's S3 server with signature checks on, an
IAM access key for it, a bucket per test, the fault proxy (plain and TLS)
and a runner for the engine's "s3" command.

moto checks signatures only after INITIAL_NO_AUTH_ACTION_COUNT actions
(moto/core/authorization.py counts every authenticated action, IAM ones
included).  The server starts with a count of 3, spent on CreateUser,
PutUserPolicy and CreateAccessKey.  Every later request must be signed with
that key, which test_moto_rejects_wrong_secret checks."""

import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import time
import uuid

import boto3
import pytest
import trustme
from botocore.config import Config

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from enginetest import REPO, built_program, engine_env, run_program  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from s3helpers import AWS_SECRETS, REGION, free_port  # noqa: E402

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a long test (such as the 1 GiB upload); runs by default, "
        "deselect with -m 'not slow'")


class MotoServer:
    def __init__(self, log_path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start; see {log_path}")
                time.sleep(0.1)

    def bootstrap_iam(self):
        """Create the IAM user and access key with the unauthenticated
        actions the server allows."""
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name=REGION,
                           aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="mfmodal-test")
        iam.put_user_policy(
            UserName="mfmodal-test", PolicyName="everything",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="mfmodal-test")["AccessKey"]
        self.key_id = key["AccessKeyId"]
        self.secret = key["SecretAccessKey"]
        AWS_SECRETS.add(self.secret)

    def client(self, service, **creds):
        creds = creds or {"aws_access_key_id": self.key_id,
                          "aws_secret_access_key": self.secret}
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            config=Config(s3={"addressing_style": "path"},
                          retries={"max_attempts": 2, "mode": "standard"}),
            **creds)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        server.bootstrap_iam()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(moto):
    """boto3's S3 client with the test key: the reference to compare with."""
    return moto.client("s3")


@pytest.fixture(scope="session")
def session_credentials(moto):
    """Temporary credentials (with a session token) from STS AssumeRole."""
    iam = moto.client("iam")
    iam.create_role(RoleName="mfmodal-test-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"AWS": "arn:aws:iam::123456789012:user/mfmodal-test"}}]}))
    iam.put_role_policy(
        RoleName="mfmodal-test-role", PolicyName="everything",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    creds = moto.client("sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/mfmodal-test-role",
        RoleSessionName="mfmodal-test")["Credentials"]
    AWS_SECRETS.add(creds["SecretAccessKey"])
    AWS_SECRETS.add(creds["SessionToken"])
    return creds


@pytest.fixture
def bucket(s3):
    name = f"mfmodal-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    # Free moto's memory; uploads are checked by the tests themselves.
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"],
                                  UploadId=upload["UploadId"])


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory):
    """A test CA and a server certificate for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return ca_file, context


@pytest.fixture
def proxy(moto):
    p = FaultProxy(moto.port).start()
    yield p
    p.stop()


@pytest.fixture
def tls_proxy(moto, tls_ca):
    p = FaultProxy(moto.port, ssl_context=tls_ca[1]).start()
    yield p
    p.stop()


class Engine:
    """Runs "mfmodal-engine s3 ..." against one endpoint with one key."""

    def __init__(self, program, endpoint, key_id, secret, ca_file=None):
        self.program = program
        self.endpoint = endpoint
        self.key_id = key_id
        self.secret = secret
        self.ca_file = ca_file

    def env(self, **extra):
        AWS_SECRETS.add(self.secret)
        base = {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_SHARED_CREDENTIALS_FILE": str(REPO / "tests" / "no-such-aws-credentials"),
            "AWS_CONFIG_FILE": str(REPO / "tests" / "no-such-aws-config"),
            # Short backoff keeps the fault tests fast; the rules are the same.
            "MFMODAL_S3_RETRY_BASE_DELAY": "0.05",
            "MFMODAL_CA_FILE": str(self.ca_file) if self.ca_file else None,
        }
        base.update(extra)
        return engine_env("http://127.0.0.1:9", **base)

    def run(self, *args, env=None, timeout=300, prefix=()):
        return run_program([*prefix, self.program, "s3", *map(str, args)],
                           self.env(**(env or {})), timeout=timeout)

    def with_endpoint(self, endpoint, ca_file=None):
        return Engine(self.program, endpoint, self.key_id, self.secret, ca_file)


@pytest.fixture(scope="session")
def engine_program():
    return built_program("mfmodal-engine")


@pytest.fixture
def engine(engine_program, moto):
    """The engine straight against moto over plain HTTP."""
    return Engine(engine_program, moto.endpoint, moto.key_id, moto.secret)


@pytest.fixture
def proxied_engine(engine, proxy):
    return engine.with_endpoint(proxy.url)


@pytest.fixture
def tls_engine(engine, tls_proxy, tls_ca):
    return engine.with_endpoint(tls_proxy.url, tls_ca[0])
