"""Call counters and the JSON state dump in ``STATE_DIR/state.json``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional

log = logging.getLogger(__name__)

STATE_FILE_NAME = "state.json"

# The dump keeps only the most recent calls, so a long run does not grow it without bound.
RECENT_CALLS_KEPT = 500
# Maximum delays before a change reaches the file when no call reply forces a write:
# an object change (a sandbox exits), and a change that only moves call counters.
OBJECT_WRITE_DELAY = 0.05
COUNTER_WRITE_DELAY = 0.2


class StateStore:
    """Call counters plus the writer that keeps ``state.json`` current.

    ``snapshot`` builds the full dump from the registries. A change to an object
    (a sandbox, image, secret, app or fault) is written before the reply of the
    call that caused it: the call pipeline calls ``flush`` before it sends the
    final status. A change to the call counters alone is written at most
    COUNTER_WRITE_DELAY seconds later, because rewriting the whole file on every
    long poll would cost more than the calls themselves. Object changes outside
    a call, such as a sandbox exiting, are written within OBJECT_WRITE_DELAY
    seconds. The control API's /state is always current.
    """

    def __init__(self, state_dir: str, snapshot: Callable[[], Dict[str, Any]]) -> None:
        self.path = os.path.join(state_dir, STATE_FILE_NAME)
        self._snapshot = snapshot
        self.call_counts: Dict[str, Dict[str, int]] = {}
        self.recent_calls: Deque[Dict[str, Any]] = deque(maxlen=RECENT_CALLS_KEPT)
        self._call_seq = 0
        self._objects_changed = False
        self._counters_changed = False
        self._write_soon: Optional[asyncio.TimerHandle] = None
        self._write_later: Optional[asyncio.TimerHandle] = None

    def record_call(self, method: str, status: str, **details: Any) -> None:
        per_method = self.call_counts.setdefault(method, {})
        per_method[status] = per_method.get(status, 0) + 1
        self._call_seq += 1
        self.recent_calls.append({"seq": self._call_seq, "method": method, "status": status,
                                  "ended_at": time.time(), **details})
        self._counters_changed = True
        loop = _running_loop()
        if loop is not None and self._write_later is None:
            self._write_later = loop.call_later(COUNTER_WRITE_DELAY, self._write_pending)

    def counters_json(self) -> Dict[str, Any]:
        return {
            "calls": {method: dict(counts) for method, counts in sorted(self.call_counts.items())},
            "recent_calls": list(self.recent_calls),
        }

    def changed(self) -> None:
        """Mark an object change; the next ``flush`` or a timer writes it."""
        self._objects_changed = True
        loop = _running_loop()
        if loop is not None and self._write_soon is None:
            self._write_soon = loop.call_later(OBJECT_WRITE_DELAY, self.flush)

    def flush(self) -> None:
        """Write the dump now if an object changed since the last write."""
        if self._objects_changed:
            self._write_pending()

    def _write_pending(self) -> None:
        for handle in (self._write_soon, self._write_later):
            if handle is not None:
                handle.cancel()
        self._write_soon = self._write_later = None
        if self._objects_changed or self._counters_changed:
            self._objects_changed = self._counters_changed = False
            self.write(self._snapshot())

    def write(self, dump: Dict[str, Any]) -> None:
        """Write the dump atomically: a reader sees the old file or the new one, never a part."""
        temporary = f"{self.path}.{os.getpid()}.tmp"
        # json.dumps with no indent uses the C encoder; json.dump would write in many small chunks.
        text = json.dumps(dump, sort_keys=True)
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            os.replace(temporary, self.path)
        except OSError as exc:
            log.error("failed to write state dump %s: %s", self.path, exc)


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def load_state_file(state_dir: str) -> Optional[Dict[str, Any]]:
    """Return the last dump written to ``state_dir``, or None when there is none yet."""
    try:
        with open(os.path.join(state_dir, STATE_FILE_NAME), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
