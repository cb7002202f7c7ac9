"""mfmodal-engine's command line: --version, --help, ping and its errors."""

import subprocess
import sys

import pytest

from enginetest import TEST_TOKEN_SECRET, built_program, engine_env, run_program

SERVER = __file__.replace("test_cli.py", "grpc_test_server.py")


@pytest.fixture
def server_url(tmp_path):
    proc = subprocess.Popen([sys.executable, SERVER, "--token-secret", TEST_TOKEN_SECRET],
                            stdout=subprocess.PIPE, text=True)
    yield proc.stdout.readline().strip()
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


def engine(*args, env):
    return run_program([built_program("mfmodal-engine"), *args], env)


def test_version():
    result = engine("--version", env=engine_env("http://127.0.0.1:1"))
    assert result.returncode == 0
    assert result.stdout.startswith("mfmodal-engine 0.")


def test_help_lists_options_with_units():
    result = engine("--help", env=engine_env("http://127.0.0.1:1"))
    assert result.returncode == 0
    for option in ("--ca-file FILE", "--log-level LEVEL", "--timeout SECONDS"):
        assert option in result.stdout
    assert "in seconds" in result.stdout
    assert "ping" in result.stdout


def test_ping_ok(server_url):
    result = engine("ping", env=engine_env(server_url))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"ok: {server_url} accepted the credentials from "
                             "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET\n")


def test_ping_rejected_credentials(server_url):
    result = engine("ping", env=engine_env(server_url, MODAL_TOKEN_SECRET="as-wrong"))
    assert result.returncode == 1
    assert "ping to " + server_url + " failed: UNAUTHENTICATED" in result.stderr
    assert "as-wrong" not in result.stderr + result.stdout


def test_ping_profile_from_config_file(server_url, tmp_path):
    config = tmp_path / "modal.toml"
    config.write_text(f'[ci]\ntoken_id = "ak-file"\ntoken_secret = "{TEST_TOKEN_SECRET}"\n'
                      f'server_url = "{server_url}"\nactive = true\n')
    env = engine_env("unused", MODAL_TOKEN_ID=None, MODAL_TOKEN_SECRET=None,
                     MODAL_SERVER_URL=None, MODAL_CONFIG_PATH=str(config))
    result = engine("ping", env=env)
    assert result.returncode == 0, result.stderr
    assert f"credentials from profile 'ci' in {config}" in result.stdout


def test_ping_missing_credentials():
    env = engine_env("http://127.0.0.1:1", MODAL_TOKEN_ID=None, MODAL_TOKEN_SECRET=None)
    result = engine("ping", env=env)
    assert result.returncode == 2
    assert "Modal credentials are missing: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET" in result.stderr


def test_ping_unreachable_server():
    result = engine("--timeout", "2", "ping", env=engine_env("http://127.0.0.1:1"))
    assert result.returncode == 1
    assert "UNAVAILABLE: connection to 127.0.0.1:1 failed: Connection refused" in result.stderr


def test_invalid_options():
    env = engine_env("http://127.0.0.1:1")
    result = engine("--log-level", "loud", "ping", env=env)
    assert result.returncode == 2
    assert "invalid log level 'loud'" in result.stderr
    result = engine("--timeout", "-3", "ping", env=env)
    assert result.returncode == 2
    assert "invalid --timeout '-3'" in result.stderr
    result = engine("frobnicate", env=env)
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr
    result = engine("ping", env=engine_env("api.modal.com"))
    assert result.returncode == 2
    assert "invalid server URL 'api.modal.com'" in result.stderr
