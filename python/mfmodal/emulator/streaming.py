"""The long-poll loop shared by SandboxGetLogs and ImageJoinStreaming, with its stream faults."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, List

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .calls import Call
from .faults import StreamPlan
from .logstore import LogEntry, LogStream, format_entry_id

log = logging.getLogger(__name__)

# make_batch(entries, entry_id, eof) builds one response message.
MakeBatch = Callable[[List[LogEntry], str, bool], Any]


async def stream_entries(call: Call, stream: LogStream, cursor: int, timeout: float, plan: StreamPlan,
                         make_batch: MakeBatch, final_message: Callable[[str], Any]) -> None:
    """Send the entries after ``cursor`` until the stream closes or ``timeout`` seconds pass.

    Every batch carries the id of its last entry, and an empty batch repeats the
    cursor. Once the stream is closed and drained, ``final_message`` (the eof
    batch, or the image build result) goes out and the call ends with OK. When
    the timeout passes first, the call ends with OK and no final message, and the
    client resumes with the last id it received.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sent = 0
    stalled = False

    if plan.replay_entries and cursor > 0:
        cursor = stream.seq_before(cursor, plan.replay_entries)
    for _ in range(plan.empty_batches):
        await call.send(make_batch([], format_entry_id(cursor), False))
    if plan.empty_batches:
        # One item with empty data. Modal's SDK (modal/io_streams.py) skips such items and says
        # that the server sends them while a sandbox boots.
        await call.send(make_batch([LogEntry(cursor, "", 0.0)], format_entry_id(cursor), False))

    while True:
        if plan.stall_after is not None and not stalled and sent >= plan.stall_after:
            stalled = True
            log.info("%s stream %s: stalling %.2f s after %d entries", call.method, call.stream_id,
                     plan.stall_seconds, sent)
            await asyncio.sleep(plan.stall_seconds)
        _end_if_limit_reached(call, plan, sent)

        limit = min(_remaining(plan.cut_after, sent), _remaining(plan.disconnect_after, sent))
        entries = stream.after(cursor)[:limit]
        if entries:
            await call.send(make_batch(entries, entries[-1].entry_id, False))
            sent += len(entries)
            cursor = entries[-1].seq
            continue
        if stream.closed:
            await call.send(final_message(format_entry_id(cursor)))
            return

        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        wait = min(remaining, plan.keepalive_interval) if plan.keepalive_interval else remaining
        if not await stream.wait_changed(wait) and plan.keepalive_interval and loop.time() < deadline:
            await call.send(make_batch([], format_entry_id(cursor), False))


def _remaining(limit: Any, sent: int) -> int:
    return 1 << 30 if limit is None else max(limit - sent, 0)


def _end_if_limit_reached(call: Call, plan: StreamPlan, sent: int) -> None:
    if plan.disconnect_after is not None and sent >= plan.disconnect_after:
        call.cut(plan.disconnect_mode, f"disconnect fault after {sent} entries")
    if plan.cut_after is not None and sent >= plan.cut_after:
        if plan.cut_status is Status.OK:
            raise _EndStream()
        raise GRPCError(plan.cut_status, plan.cut_message or f"log stream cut after {sent} entries (injected fault)")


class _EndStream(Exception):
    """Ends the stream early with status OK."""


async def run_stream(call: Call, stream: LogStream, cursor: int, timeout: float, plan: StreamPlan,
                     make_batch: MakeBatch, final_message: Callable[[str], Any]) -> None:
    """Run ``stream_entries``, turning a log_cut with status OK into a normal end of the call."""
    try:
        await stream_entries(call, stream, cursor, timeout, plan, make_batch, final_message)
    except _EndStream:
        log.info("%s stream %s: ended early with OK after a log_cut fault", call.method, call.stream_id)
