"""Fixtures for the end-to-end flow tests: moto's S3 server and the Modal
emulator on 127.0.0.1 (one of each per session), and a fresh bucket, working
directory and METAFLOW_HOME per test."""

import subprocess
import sys

import pytest

from enginetest import TEST_TOKEN_ID, TEST_TOKEN_SECRET
from flowtest import TEAM_SECRET_NAME, TEAM_TOKEN_VALUE, FlowWorkspace
from mfmodal.emulator.testing import EmulatorProcess
from mfmodal.local.servers import (
    LOCAL_AWS_ACCESS_KEY_ID,
    LOCAL_AWS_SECRET_ACCESS_KEY,
    LOCAL_AWS_SECRET_NAME,
    LOCAL_REGION,
    MotoS3Server,
)


@pytest.fixture(scope="session", autouse=True)
def extension_installed():
    """Fail early, with the fix, when Metaflow does not find the extension."""
    check = subprocess.run([sys.executable, "-c", "from metaflow import modal"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        pytest.fail("`from metaflow import modal` failed; install the package with "
                    "`pip install -e python` (scripts/setup-dev does):\n" + check.stderr)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = MotoS3Server(str(tmp_path_factory.mktemp("moto") / "moto.log")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def modal_emulator(tmp_path_factory):
    secrets = {
        LOCAL_AWS_SECRET_NAME: {
            "AWS_ACCESS_KEY_ID": LOCAL_AWS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
        },
        TEAM_SECRET_NAME: {"TEAM_TOKEN": TEAM_TOKEN_VALUE},
    }
    emulator = EmulatorProcess(tmp_path_factory.mktemp("emulator"),
                               tokens={TEST_TOKEN_ID: TEST_TOKEN_SECRET}, secrets=secrets)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def workspace(tmp_path, modal_emulator, s3_server):
    yield FlowWorkspace(tmp_path, modal_emulator, s3_server)
