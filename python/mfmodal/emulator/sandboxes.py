"""Sandboxes as local processes: start, supervise, time out, terminate, clean up.

Each sandbox runs its entrypoint in its own session and process group, so the
emulator can kill everything the entrypoint started. When the main process exits,
the rest of its group is killed too, as a container ends with its main process.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from modal_proto import api_pb2

from .logstore import LogStream, Utf8Splitter

log = logging.getLogger(__name__)

GenericResult = api_pb2.GenericResult

# Modal's default sandbox lifetime when the request leaves timeout_secs at 0.
DEFAULT_TIMEOUT_SECS = 300
# How long the supervisor waits for the pipes to reach EOF after the group was killed.
PIPE_DRAIN_SECONDS = 5.0
# How long SandboxTerminate waits for the sandbox to be reaped before it replies.
TERMINATE_WAIT_SECONDS = 10.0
PIPE_READ_SIZE = 64 * 1024

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL the entrypoint if the emulator dies without cleaning up.

    NOTE: this covers the entrypoint process only. Processes that it starts
    survive a SIGKILL of the emulator; a normal shutdown kills the whole group.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that reports the main process's exit on its own.

    ``Process.wait()`` (Python 3.11 and older) returns only once every pipe has
    closed, which a background child holding stdout open delays forever.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2 ** 16, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


@dataclass
class LaunchSpec:
    """The validated process parameters of a sandbox."""

    argv: List[str]
    env: Dict[str, str]
    cwd: str
    home: str
    timeout_secs: int
    merge_stderr: bool


class Sandbox:
    def __init__(self, sandbox_id: str, task_id: str, app_id: str, name: str, tags: Dict[str, str],
                 definition: Dict[str, Any], spec: LaunchSpec, created_at: float,
                 idempotency_key: Optional[str]) -> None:
        self.id = sandbox_id
        self.task_id = task_id
        self.app_id = app_id
        self.name = name
        self.tags = tags
        self.definition = definition
        self.spec = spec
        self.created_at = created_at
        self.idempotency_key = idempotency_key
        self.stdout = LogStream()
        self.stderr = LogStream()
        self.process: Optional[asyncio.subprocess.Process] = None
        self.pid: Optional[int] = None
        self.returncode: Optional[int] = None
        self.result: Optional[GenericResult] = None
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.terminate_calls = 0
        self.kill_reason: Optional[int] = None  # GENERIC_STATUS_TERMINATED or GENERIC_STATUS_TIMEOUT
        self.stdin_index = 0
        self.stdin_closed = False
        self.finished_event = asyncio.Event()
        self.supervisor: Optional[asyncio.Task] = None

    @property
    def finished(self) -> bool:
        return self.result is not None

    def log_stream(self, fd: int) -> LogStream:
        return self.stdout if fd == api_pb2.FILE_DESCRIPTOR_STDOUT else self.stderr

    def to_json(self) -> Dict[str, Any]:
        result = self.result
        return {
            "sandbox_id": self.id,
            "task_id": self.task_id,
            "app_id": self.app_id,
            "name": self.name,
            "tags": self.tags,
            "idempotency_key": self.idempotency_key,
            "definition": self.definition,
            "status": "finished" if result else "running",
            "pid": self.pid,
            "cwd": self.spec.cwd,
            "home": self.spec.home,
            "returncode": self.returncode,
            "exit_code": result.exitcode if result else None,
            "result_status": GenericResult.GenericStatus.Name(result.status) if result else None,
            "exception": result.exception if result else "",
            "terminate_calls": self.terminate_calls,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "stdout_entries": len(self.stdout.entries),
            "stderr_entries": len(self.stderr.entries),
            "stdin_index": self.stdin_index,
            "stdin_closed": self.stdin_closed,
        }


def _result_for(sandbox: Sandbox, returncode: int) -> GenericResult:
    if sandbox.kill_reason == GenericResult.GENERIC_STATUS_TERMINATED:
        # Clients report 137 (128 + SIGKILL) for TERMINATED whatever the exitcode field contains.
        return GenericResult(status=sandbox.kill_reason, exitcode=137, exception="Sandbox was terminated")
    if sandbox.kill_reason == GenericResult.GENERIC_STATUS_TIMEOUT:
        return GenericResult(status=sandbox.kill_reason, exitcode=124,
                             exception=f"Sandbox timed out after {sandbox.spec.timeout_secs} seconds")
    if returncode == 0:
        return GenericResult(status=GenericResult.GENERIC_STATUS_SUCCESS, exitcode=0)
    if returncode > 0:
        return GenericResult(status=GenericResult.GENERIC_STATUS_FAILURE, exitcode=returncode)
    signal_number = -returncode
    try:
        signal_name = signal.Signals(signal_number).name
    except ValueError:
        signal_name = f"signal {signal_number}"
    return GenericResult(status=GenericResult.GENERIC_STATUS_FAILURE, exitcode=128 + signal_number,
                         exception=f"Process was killed by {signal_name}")


class SandboxManager:
    def __init__(self, on_change: Callable[[], None]) -> None:
        self.sandboxes: Dict[str, Sandbox] = {}
        self.alive = 0
        self.max_alive = 0
        self.idempotency: Dict[str, "asyncio.Future[Sandbox]"] = {}
        self._on_change = on_change
        self._last_created_at = 0.0

    def next_created_at(self) -> float:
        """Return a creation time above every earlier one.

        SandboxList pages with ``before_timestamp`` = the last item's created_at,
        so two sandboxes with the same time would make one of them disappear.
        """
        now = max(time.time(), self._last_created_at + 1e-6)
        self._last_created_at = now
        return now

    def get(self, sandbox_id: str) -> Optional[Sandbox]:
        return self.sandboxes.get(sandbox_id)

    def find_running(self, app_id: str, name: str) -> Optional[Sandbox]:
        for sandbox in self.sandboxes.values():
            if sandbox.app_id == app_id and sandbox.name == name and not sandbox.finished:
                return sandbox
        return None

    async def launch(self, sandbox: Sandbox) -> None:
        """Start the sandbox's process; a start failure finishes the sandbox at once."""
        self.sandboxes[sandbox.id] = sandbox
        self.alive += 1
        self.max_alive = max(self.max_alive, self.alive)
        spec = sandbox.spec
        sandbox.started_at = time.time()
        try:
            os.makedirs(spec.cwd, exist_ok=True)
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.subprocess_exec(
                lambda: _ExitAwareProtocol(loop),
                *spec.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT if spec.merge_stderr else asyncio.subprocess.PIPE,
                cwd=spec.cwd,
                env=spec.env,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        except (OSError, ValueError) as exc:
            self._fail_start(sandbox, exc)
            return
        process = asyncio.subprocess.Process(transport, protocol, loop)
        sandbox.process = process
        sandbox.pid = process.pid
        log.info("sandbox %s: started pid %d: %s", sandbox.id, process.pid, spec.argv)
        sandbox.supervisor = loop.create_task(self._supervise(sandbox, process, protocol))
        self._on_change()

    def _fail_start(self, sandbox: Sandbox, exc: Exception) -> None:
        # Shells use 127 for a command that is not found and 126 for one that cannot run.
        exitcode = 127 if isinstance(exc, FileNotFoundError) else 126
        reason = getattr(exc, "strerror", None) or exc
        message = f"failed to start {sandbox.spec.argv[0]!r} in {sandbox.spec.cwd}: {reason}"
        log.warning("sandbox %s: %s", sandbox.id, message)
        sandbox.stderr.append(message + "\n")
        self._finish(sandbox, GenericResult(status=GenericResult.GENERIC_STATUS_FAILURE, exitcode=exitcode,
                                            exception=message))

    async def _supervise(self, sandbox: Sandbox, process: asyncio.subprocess.Process,
                         protocol: "_ExitAwareProtocol") -> None:
        pumps = [asyncio.ensure_future(self._pump(process.stdout, sandbox.stdout))]
        if process.stderr is not None:
            pumps.append(asyncio.ensure_future(self._pump(process.stderr, sandbox.stderr)))
        try:
            await asyncio.wait_for(protocol.exited.wait(), timeout=sandbox.spec.timeout_secs)
        except asyncio.TimeoutError:
            if sandbox.kill_reason is None:
                sandbox.kill_reason = GenericResult.GENERIC_STATUS_TIMEOUT
                log.info("sandbox %s: timed out after %d s", sandbox.id, sandbox.spec.timeout_secs)
            self.kill_group(sandbox)
            await protocol.exited.wait()
        returncode = process.returncode
        assert returncode is not None
        sandbox.returncode = returncode
        self.kill_group(sandbox)

        done, pending = await asyncio.wait(pumps, timeout=PIPE_DRAIN_SECONDS)
        for task in pending:
            log.warning("sandbox %s: output pipe still open %.0f s after exit, closing it",
                        sandbox.id, PIPE_DRAIN_SECONDS)
            task.cancel()
        if process.stdin is not None:
            process.stdin.close()
        self._finish(sandbox, _result_for(sandbox, returncode))

    @staticmethod
    async def _pump(reader: Optional[asyncio.StreamReader], stream: LogStream) -> None:
        if reader is None:
            return
        splitter = Utf8Splitter()
        while True:
            chunk = await reader.read(PIPE_READ_SIZE)
            if not chunk:
                break
            stream.append(splitter.feed(chunk))
        stream.append(splitter.finish())

    def _finish(self, sandbox: Sandbox, result: GenericResult) -> None:
        sandbox.stdout.close()
        sandbox.stderr.close()
        sandbox.result = result
        sandbox.finished_at = time.time()
        self.alive -= 1
        sandbox.finished_event.set()
        log.info("sandbox %s: finished %s, exit code %d", sandbox.id,
                 GenericResult.GenericStatus.Name(result.status), result.exitcode)
        self._on_change()

    @staticmethod
    def kill_group(sandbox: Sandbox) -> None:
        if sandbox.pid is None:
            return
        try:
            os.killpg(sandbox.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def terminate(self, sandbox: Sandbox) -> Optional[GenericResult]:
        """Kill the sandbox and wait until it is reaped; return its earlier result if it had finished."""
        sandbox.terminate_calls += 1
        self._on_change()
        if sandbox.finished:
            return sandbox.result
        if sandbox.kill_reason is None:
            sandbox.kill_reason = GenericResult.GENERIC_STATUS_TERMINATED
            log.info("sandbox %s: terminating", sandbox.id)
        self.kill_group(sandbox)
        try:
            await asyncio.wait_for(asyncio.shield(sandbox.finished_event.wait()), TERMINATE_WAIT_SECONDS)
        except asyncio.TimeoutError:
            log.error("sandbox %s: still not reaped %.0f s after SIGKILL", sandbox.id, TERMINATE_WAIT_SECONDS)
        return None

    async def write_stdin(self, sandbox: Sandbox, data: bytes, index: int, eof: bool) -> None:
        """Write one SandboxStdinWrite chunk; an index at or below the last one is a retry and is skipped."""
        process = sandbox.process
        if process is None or process.stdin is None or sandbox.stdin_closed:
            return
        if index > sandbox.stdin_index:
            sandbox.stdin_index = index
            if data:
                process.stdin.write(data)
        if eof:
            sandbox.stdin_closed = True
            process.stdin.close()
        try:
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            # The process exited or closed its stdin, so the input is dropped.
            pass
        self._on_change()

    async def stop_all(self) -> None:
        """Kill every sandbox's process group and wait for the supervisors to record it."""
        for sandbox in self.sandboxes.values():
            if not sandbox.finished and sandbox.kill_reason is None:
                sandbox.kill_reason = GenericResult.GENERIC_STATUS_TERMINATED
            self.kill_group(sandbox)
        supervisors = [s.supervisor for s in self.sandboxes.values() if s.supervisor and not s.supervisor.done()]
        if supervisors:
            await asyncio.wait(supervisors, timeout=PIPE_DRAIN_SECONDS + 1)

    def to_json(self) -> Dict[str, Any]:
        return {sandbox.id: sandbox.to_json() for sandbox in self.sandboxes.values()}
