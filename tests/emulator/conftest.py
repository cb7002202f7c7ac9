"""Fixtures that start the emulator as a subprocess and report its log when a test fails."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterator, List

import pytest

from mfmodal.emulator.testing import EmulatorProcess

# The tests import the helper modules beside this file (emulator_client, h2_frames) by name.
sys.path.insert(0, os.path.dirname(__file__))

NAMED_SECRETS = {
    "hf-token": {"HF_TOKEN": "hf_test_value", "SHARED": "from-hf-token"},
    "other": {"SHARED": "from-other", "OTHER": "1"},
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def _attach_logs(request: Any, emulators: List[EmulatorProcess]) -> None:
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for emulator in emulators:
            print(f"\n--- emulator log {emulator.log_path} ---\n{emulator.log()[-20000:]}")


@pytest.fixture(scope="module")
def shared_emulator(tmp_path_factory: Any) -> Iterator[EmulatorProcess]:
    """One emulator per test module, with the named secrets of NAMED_SECRETS."""
    emulator = EmulatorProcess(tmp_path_factory.mktemp("emulator"), secrets=NAMED_SECRETS)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emulator(request: Any, shared_emulator: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The module's emulator with no faults active."""
    shared_emulator.clear_faults()
    yield shared_emulator
    shared_emulator.clear_faults()
    _attach_logs(request, [shared_emulator])


@pytest.fixture
def start_emulator(request: Any, tmp_path: Any) -> Iterator[Callable[..., EmulatorProcess]]:
    """Start emulators with custom options; all are stopped after the test."""
    started: List[EmulatorProcess] = []

    def start(**options: Any) -> EmulatorProcess:
        options.setdefault("secrets", NAMED_SECRETS)
        emulator = EmulatorProcess(tmp_path / f"emulator{len(started)}", **options)
        started.append(emulator)
        return emulator.start()

    yield start
    for emulator in started:
        emulator.stop()
    _attach_logs(request, started)
