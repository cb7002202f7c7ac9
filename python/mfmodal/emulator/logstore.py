"""Append-only log streams with Redis-stream-like entry ids.

Each stream contains entries numbered 1, 2, 3, ... whose ids read ``"1-0"``,
``"2-0"``, ... A reader passes the id of the last entry it saw and receives the
entries strictly after it. ``""`` and ``"0-0"`` both mean "from the start".
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import re
import time
from dataclasses import dataclass
from typing import List, Optional

# Upper bounds for one batch, so that a burst of output never becomes one huge message.
MAX_BATCH_ENTRIES = 1000
MAX_BATCH_BYTES = 1 << 20

_ENTRY_ID_RE = re.compile(r"^([0-9]{1,18})-([0-9]{1,18})$")


@dataclass(frozen=True)
class LogEntry:
    seq: int
    data: str
    timestamp: float

    @property
    def entry_id(self) -> str:
        return format_entry_id(self.seq)


def format_entry_id(seq: int) -> str:
    """Return the wire id of entry number ``seq``; 0 is the position before the first entry."""
    return f"{seq}-0"


def parse_entry_id(text: str) -> int:
    """Return the entry number after which a reader resumes.

    Raises ValueError for text that is neither empty nor ``"<n>-<m>"``.
    """
    if text == "":
        return 0
    match = _ENTRY_ID_RE.match(text)
    if match is None:
        raise ValueError(f'invalid entry id "{text}": expected "" or "<n>-<m>" such as "12-0"')
    # Ids are (n, 0), so the entries strictly after (n, m) are those with a number above n.
    return int(match.group(1))


class LogStream:
    """One append-only stream, such as a sandbox's stdout or an image's build log."""

    def __init__(self) -> None:
        self.entries: List[LogEntry] = []
        self.closed = False
        self._changed = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return self.entries[-1].seq if self.entries else 0

    def append(self, data: str) -> None:
        if self.closed:
            raise RuntimeError("append to a closed log stream")
        if not data:
            return
        self.entries.append(LogEntry(self.last_seq + 1, data, time.time()))
        self._notify()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._notify()

    def after(self, seq: int, max_entries: int = MAX_BATCH_ENTRIES) -> List[LogEntry]:
        """Return the entries numbered above ``seq``, limited to one batch."""
        start = bisect.bisect_right([entry.seq for entry in self.entries], seq) if self.entries else 0
        batch: List[LogEntry] = []
        size = 0
        for entry in self.entries[start:]:
            if len(batch) >= max_entries or (batch and size + len(entry.data) > MAX_BATCH_BYTES):
                break
            batch.append(entry)
            size += len(entry.data)
        return batch

    def seq_before(self, seq: int, count: int) -> int:
        """Return the cursor that lies ``count`` entries before ``seq`` (never below 0)."""
        seqs = [entry.seq for entry in self.entries]
        index = bisect.bisect_right(seqs, seq) - count
        return seqs[index - 1] if index > 0 else 0

    async def wait_changed(self, timeout: Optional[float]) -> bool:
        """Wait until an entry is appended or the stream closes; return False on timeout."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _notify(self) -> None:
        # Waiters hold the old event, so replace it before setting it.
        event, self._changed = self._changed, asyncio.Event()
        event.set()


class Utf8Splitter:
    """Incremental decoder that turns pipe output into valid UTF-8 text.

    A multi-byte character split across reads is held back until it is complete.
    Invalid bytes become U+FFFD, so every returned string encodes as valid UTF-8.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> str:
        return self._decoder.decode(chunk)

    def finish(self) -> str:
        return self._decoder.decode(b"", final=True)
