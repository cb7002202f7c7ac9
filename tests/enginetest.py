"""Helpers shared by the Python test suites: where the built programs are,
and a record of everything they print, scanned for secrets at the end."""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILD_DIR = pathlib.Path(os.environ.get("MFMODAL_BUILD_DIR", REPO))

# Credentials the tests hand to the engine.  The secret must never appear in
# anything the engine prints; tests/test_zz_secret_scan.py checks that.
TEST_TOKEN_ID = "ak-testtokenid0000000000"
TEST_TOKEN_SECRET = "as-testsecret-3f9c1e7a5b2d"

# Every output of a program started through run_program(), in order.
RECORDED_OUTPUT = []


def built_program(relative):
    """Return the path of a program built by make, or skip when it is missing."""
    path = BUILD_DIR / relative
    if not path.exists():
        pytest.skip(f"{path} is not built: run make (and make check) first, "
                    "or set MFMODAL_BUILD_DIR to the build directory")
    return path


def engine_env(server_url, **extra):
    """An environment for the engine that reads no user configuration."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "MODAL_SERVER_URL": server_url,
        "MODAL_TOKEN_ID": TEST_TOKEN_ID,
        "MODAL_TOKEN_SECRET": TEST_TOKEN_SECRET,
        "MODAL_CONFIG_PATH": str(REPO / "tests" / "no-such-modal.toml"),
    }
    for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update({k: v for k, v in extra.items() if v is not None})
    for k in [k for k, v in extra.items() if v is None]:
        env.pop(k, None)
    return env


def run_program(argv, env, timeout=120, wrapper=None):
    """Run a built program, record its output and return the CompletedProcess.

    MFMODAL_TEST_WRAPPER (for example "valgrind --error-exitcode=99
    --leak-check=full") is put in front of the command when set."""
    prefix = (wrapper or os.environ.get("MFMODAL_TEST_WRAPPER", "")).split()
    result = subprocess.run(prefix + [str(a) for a in argv], env=env,
                            capture_output=True, text=True, timeout=timeout)
    RECORDED_OUTPUT.append((" ".join(str(a) for a in argv), result.stdout, result.stderr))
    return result
