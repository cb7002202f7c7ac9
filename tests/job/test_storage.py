"""mfmodal-engine run with an S3 datastore (moto's server): the code
package, the stored logs and the local metadata sync."""

import gzip
import hashlib
import io
import json
import signal
import tarfile
import time

import pytest

from conftest import task_lines
from motoserver import MotoServer

BUCKET = "mfmodal-test"
IMAGE = {"registry": "python:3.11-slim"}
TASK = {"flow": "HelloFlow", "run": "5", "step": "train", "task": "9", "attempt": 1}
TASK_URL = f"s3://{BUCKET}/root/HelloFlow/5/train/9"


@pytest.fixture
def moto(tmp_path):
    server = MotoServer(tmp_path / "moto.log")
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


def stored_lines(moto, key):
    body = moto.client().get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return body, task_lines(body)


def test_package_uploaded_once(emulator, run_job, moto, tmp_path):
    package = tmp_path / "job.tar"
    package.write_bytes(b"package bytes" * 1000)
    url = f"s3://{BUCKET}/root/HelloFlow/data/ab/abcdef"
    spec = {"id": "p", "command": "true", "image": IMAGE,
            "package": {"url": url, "path": str(package)}}
    run = run_job(spec, env_extra=moto.env())
    assert run.finish() == 0, run.stderr
    assert "code package uploaded to " + url in run.stderr
    obj = moto.client().get_object(Bucket=BUCKET, Key="root/HelloFlow/data/ab/abcdef")
    assert obj["Body"].read() == package.read_bytes()

    run = run_job(spec, env_extra=moto.env())
    assert run.finish() == 0, run.stderr
    assert "code package uploaded" not in run.stderr
    assert "PACKAGE -> RESOLVE" in run.stderr


def test_missing_package_without_local_file(emulator, run_job, moto):
    spec = {"id": "p", "command": "true", "image": IMAGE,
            "package": {"url": f"s3://{BUCKET}/root/F/data/00/none"}}
    run = run_job(spec, env_extra=moto.env())
    assert run.finish() == 1
    assert "does not exist and the job names no local file" in run.stderr
    assert emulator.state()["sandboxes"] == {}


def test_logs_stored_in_metaflow_layout(emulator, run_job, moto):
    spec = {"id": "l", "command": "echo out one; echo err one >&2; echo out two",
            "image": IMAGE, "task": TASK, "logs": {"url": TASK_URL}}
    run = run_job(spec, env_extra=moto.env())
    assert run.finish() == 0, run.stderr
    body, lines = stored_lines(moto, "root/HelloFlow/5/train/9/1.task_stdout.log")
    assert lines == ["out one", "out two"]
    _, err_lines = stored_lines(moto, "root/HelloFlow/5/train/9/1.task_stderr.log")
    assert err_lines == ["err one"]
    # Metaflow's own parser reads the stored lines
    from metaflow.mflog.mflog import parse
    parsed = [parse(line.encode()) for line in body.splitlines()]
    assert [p.msg for p in parsed] == [b"out one", b"out two"]
    assert all(p.logsource == b"task" for p in parsed)


def test_logs_uploaded_while_running(emulator, run_job, moto):
    spec = {"id": "l", "command": "echo early; sleep 4; echo late",
            "image": IMAGE, "task": TASK, "logs": {"url": TASK_URL}}
    run = run_job(spec, env_extra=moto.env())
    key = "root/HelloFlow/5/train/9/1.task_stdout.log"
    seen = None
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and seen is None:
        try:
            seen = stored_lines(moto, key)[1]
        except moto.client().exceptions.NoSuchKey:
            time.sleep(0.2)
    assert seen == ["early"]
    assert run.finish() == 0, run.stderr
    assert stored_lines(moto, key)[1] == ["early", "late"]


def test_logs_of_killed_task_stored(emulator, run_job, moto):
    spec = {"id": "l", "command": "echo before the end; sleep 30",
            "image": IMAGE, "task": TASK, "logs": {"url": TASK_URL}}
    run = run_job(spec, env_extra=moto.env())
    run.wait_for_log("CREATE -> RUNNING")
    time.sleep(1)
    run.signal(signal.SIGINT)
    assert run.finish() == 130
    assert stored_lines(moto, "root/HelloFlow/5/train/9/1.task_stdout.log")[1] == [
        "before the end"]


def put_metadata(moto, members, raw_tar=None):
    """Store a local-metadata tarball the way Metaflow does; return its key."""
    if raw_tar is None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        raw_tar = buf.getvalue()
    key = hashlib.sha1(raw_tar).hexdigest()
    client = moto.client()
    client.put_object(Bucket=BUCKET, Key=f"root/HelloFlow/data/{key[:2]}/{key}",
                      Body=gzip.compress(raw_tar, compresslevel=3))
    client.put_object(Bucket=BUCKET, Key="root/HelloFlow/5/train/9/1.local_metadata",
                      Body=json.dumps(key).encode())
    return key


def test_local_metadata_synced(emulator, run_job, moto, tmp_path):
    put_metadata(moto, {
        ".metaflow/HelloFlow/5/train/9/_meta/1_attempt.json": b'{"attempt": 1}',
        ".metaflow/HelloFlow/5/_meta/_self.json": b"{}",
    })
    local = tmp_path / "local" / ".metaflow"
    spec = {"id": "m", "command": "true", "image": IMAGE, "task": TASK,
            "metadata": {"url": TASK_URL, "dir": str(local)}}
    run = run_job(spec, env_extra=moto.env())
    assert run.finish() == 0, run.stderr
    attempt_file = local / "HelloFlow/5/train/9/_meta/1_attempt.json"
    assert attempt_file.exists(), run.stderr
    assert attempt_file.read_text() == '{"attempt": 1}'
    assert (local / "HelloFlow/5/_meta/_self.json").exists()
    assert "local metadata synced" in run.stderr


def test_hostile_metadata_rejected(emulator, run_job, moto, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(".metaflow/../../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    put_metadata(moto, None, raw_tar=buf.getvalue())
    local = tmp_path / "a" / "b" / ".metaflow"
    spec = {"id": "m", "command": "true", "image": IMAGE, "task": TASK,
            "metadata": {"url": TASK_URL, "dir": str(local)}}
    run = run_job(spec, env_extra=moto.env())
    assert run.finish() == 0, run.stderr
    assert "unsafe tar entry" in run.stderr
    assert not (tmp_path / "a" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_no_metadata_for_failed_attempt(emulator, run_job, moto, tmp_path):
    spec = {"id": "m", "command": "exit 5", "image": IMAGE, "task": TASK,
            "metadata": {"url": TASK_URL, "dir": str(tmp_path / ".metaflow")}}
    run = run_job(spec, env_extra=moto.env())
    assert run.finish() == 5
    assert "stored no local metadata for attempt 1" in run.stderr
