"""Fault injection: fault specs, their parsing, and the per-call decisions.

A spec is either ``KIND`` or ``KIND:key=value,key=value`` (values cannot contain
commas), or a JSON object such as ``{"kind": "error", "status": "UNAVAILABLE"}``.
doc/emulator.md lists every kind and parameter.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from grpclib.const import Status
from h2.errors import ErrorCodes

# Parameters accepted by each kind. "calls" and "times" select which matching calls fire.
_COUNTED = {"calls", "times"}
KIND_PARAMS: Dict[str, set] = {
    "error": _COUNTED | {"method", "status", "message", "retry_after", "when"},
    "delay": _COUNTED | {"method", "seconds"},
    "disconnect": _COUNTED | {"method", "when", "after_entries", "mode"},
    "raw_status": _COUNTED | {"method", "variant", "status", "message", "message_hex", "http_status"},
    "goaway": {"after", "grace", "code", "debug", "drain", "times"},
    "max_streams": {"limit"},
    "ping_limit": {"min_interval", "strikes"},
    "create_rate": {"method", "limit", "status", "message", "retry_after"},
    "log_cut": _COUNTED | {"method", "fd", "after", "status", "message"},
    "log_stall": _COUNTED | {"method", "fd", "after", "seconds"},
    "log_replay": _COUNTED | {"method", "fd", "entries"},
    "log_empty": _COUNTED | {"method", "fd", "count"},
    "log_keepalive": _COUNTED | {"method", "fd", "interval"},
    "image_stream": {"match", "lines", "seconds", "times"},
    "image_fail": {"match", "lines", "seconds", "message", "times"},
}

STREAM_METHODS = ("SandboxGetLogs", "ImageJoinStreaming")
RAW_STATUS_VARIANTS = ("trailers_only", "no_trailers", "status_in_headers", "http_error")


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed or has an invalid parameter."""


@dataclass(frozen=True)
class CallRange:
    """1-based range of matching calls, ``first`` to ``last`` inclusive (``last`` None = no end)."""

    first: int = 1
    last: Optional[int] = None

    @classmethod
    def parse(cls, text: str) -> "CallRange":
        first_text, dash, last_text = str(text).partition("-")
        try:
            first = int(first_text)
            if not dash:
                last: Optional[int] = first
            elif last_text:
                last = int(last_text)
            else:
                last = None
        except ValueError:
            raise FaultSpecError(f'invalid calls "{text}": expected N, N-M or N-') from None
        if first < 1 or (last is not None and last < first):
            raise FaultSpecError(f'invalid calls "{text}": numbers start at 1 and M must not be below N')
        return cls(first, last)

    def contains(self, number: int) -> bool:
        return number >= self.first and (self.last is None or number <= self.last)

    def __str__(self) -> str:
        if self.last is None:
            return f"{self.first}-"
        return str(self.first) if self.last == self.first else f"{self.first}-{self.last}"


@dataclass
class Fault:
    id: int
    kind: str
    params: Dict[str, Any]
    calls: CallRange = CallRange()
    times: Optional[int] = None
    seen: int = 0
    fired: int = 0

    def method_matches(self, method: str, default: str = "*") -> bool:
        selected = self.params.get("method", default)
        return selected == "*" or selected == method

    def fd_matches(self, fd: int) -> bool:
        selected = self.params.get("fd")
        return selected is None or selected == fd

    def take(self) -> bool:
        """Count one matching call and return whether the fault fires on it."""
        self.seen += 1
        if not self.calls.contains(self.seen):
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "params": self.params,
            "calls": str(self.calls),
            "times": self.times,
            "seen": self.seen,
            "fired": self.fired,
        }


@dataclass
class ErrorAction:
    status: Status
    message: str
    retry_after: Optional[float] = None


@dataclass
class CallPlan:
    """The faults' decisions for one call, made before its handler runs."""

    delay: float = 0.0
    error_before: Optional[ErrorAction] = None
    error_after: Optional[ErrorAction] = None
    disconnect: Optional[Dict[str, Any]] = None
    raw_status: Optional[Dict[str, Any]] = None
    fired: List[int] = field(default_factory=list)


@dataclass
class StreamPlan:
    """Faults that shape one server-streaming call (SandboxGetLogs or ImageJoinStreaming)."""

    cut_after: Optional[int] = None
    cut_status: Status = Status.OK
    cut_message: Optional[str] = None
    disconnect_after: Optional[int] = None
    disconnect_mode: str = "fin"
    stall_after: Optional[int] = None
    stall_seconds: float = 0.0
    replay_entries: int = 0
    empty_batches: int = 0
    keepalive_interval: Optional[float] = None
    fired: List[int] = field(default_factory=list)


@dataclass
class ImageBuildPlan:
    mode: str = "instant"  # "instant", "stream" or "fail"
    lines: int = 3
    seconds: float = 0.3
    message: Optional[str] = None


def parse_status(value: Any) -> Status:
    text = str(value).strip()
    try:
        return Status(int(text)) if text.isdigit() else Status[text.upper()]
    except (KeyError, ValueError):
        names = ", ".join(status.name for status in Status)
        raise FaultSpecError(f'invalid status "{value}": expected a number 0-16 or one of {names}') from None


def _number(kind: str, key: str, value: Any, *, integer: bool, minimum: float) -> Any:
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        expected = "an integer" if integer else "a number"
        raise FaultSpecError(f'{kind}: invalid {key} "{value}": expected {expected}') from None
    if number != number or number < minimum or number in (float("inf"), float("-inf")):
        raise FaultSpecError(f'{kind}: invalid {key} "{value}": must be at least {minimum}')
    return number


_INTEGER_PARAMS = {"after": 0, "after_entries": 0, "limit": 1, "entries": 1, "count": 1, "lines": 0,
                   "http_status": 100, "fd": 1, "strikes": 0}
_FLOAT_PARAMS = {"seconds": 0.0, "retry_after": 0.0, "grace": 0.0, "drain": 0.0, "interval": 0.01,
                 "min_interval": 0.0}
_CHOICES = {
    "when": ("before", "after"),
    "mode": ("fin", "rst"),
    "variant": RAW_STATUS_VARIANTS,
}


def parse_spec(spec: Any) -> Tuple[str, Dict[str, Any]]:
    """Split a spec (text or dict) into its kind and raw parameters."""
    if isinstance(spec, dict):
        params = dict(spec)
        kind = params.pop("kind", None)
    else:
        text = str(spec).strip()
        if text.startswith("{"):
            try:
                params = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FaultSpecError(f"invalid JSON fault spec: {exc}") from None
            if not isinstance(params, dict):
                raise FaultSpecError("invalid JSON fault spec: expected an object")
            kind = params.pop("kind", None)
        else:
            kind, _, rest = text.partition(":")
            params = {}
            for item in filter(None, rest.split(",")):
                key, eq, value = item.partition("=")
                if not eq:
                    raise FaultSpecError(f'invalid fault parameter "{item}": expected key=value')
                params[key.strip()] = value.strip()
    if not kind or kind not in KIND_PARAMS:
        raise FaultSpecError(f'invalid fault kind "{kind}": expected one of {", ".join(KIND_PARAMS)}')
    return kind, params


def build_fault(fault_id: int, spec: Any) -> Fault:
    """Parse and validate one spec into a Fault."""
    kind, raw = parse_spec(spec)
    unknown = set(raw) - KIND_PARAMS[kind]
    if unknown:
        allowed = ", ".join(sorted(KIND_PARAMS[kind]))
        raise FaultSpecError(f'{kind}: unknown parameter(s) {", ".join(sorted(unknown))}; allowed: {allowed}')

    params: Dict[str, Any] = {}
    calls = CallRange()
    times = None
    for key, value in raw.items():
        if key == "calls":
            calls = CallRange.parse(value)
        elif key == "times":
            times = _number(kind, key, value, integer=True, minimum=1)
        elif key in _INTEGER_PARAMS:
            params[key] = _number(kind, key, value, integer=True, minimum=_INTEGER_PARAMS[key])
        elif key in _FLOAT_PARAMS:
            params[key] = _number(kind, key, value, integer=False, minimum=_FLOAT_PARAMS[key])
        elif key == "status":
            params[key] = parse_status(value).name
        elif key == "code":
            try:
                params[key] = ErrorCodes[str(value).upper()].name
            except KeyError:
                raise FaultSpecError(f'{kind}: invalid code "{value}": expected an HTTP/2 error code name '
                                     "such as NO_ERROR or ENHANCE_YOUR_CALM") from None
        elif key in _CHOICES:
            if value not in _CHOICES[key]:
                raise FaultSpecError(f'{kind}: invalid {key} "{value}": expected one of {", ".join(_CHOICES[key])}')
            params[key] = value
        elif key == "message_hex":
            try:
                bytes.fromhex(str(value))
            except ValueError:
                raise FaultSpecError(f'{kind}: invalid message_hex "{value}": expected hex digits') from None
            params[key] = str(value)
        else:
            params[key] = str(value)

    _check_required(kind, params)
    return Fault(fault_id, kind, params, calls, times)


def _check_required(kind: str, params: Dict[str, Any]) -> None:
    required = {
        "delay": ("seconds",),
        "goaway": ("after",),
        "max_streams": ("limit",),
        "ping_limit": ("min_interval",),
        "create_rate": ("limit",),
        "log_cut": ("after",),
        "log_stall": ("seconds",),
        "log_replay": ("entries",),
        "log_keepalive": ("interval",),
    }.get(kind, ())
    for key in required:
        if key not in params:
            raise FaultSpecError(f"{kind}: missing parameter {key}")
    if kind == "goaway" and params["after"] < 1:
        raise FaultSpecError("goaway: after must be at least 1")
    if kind.startswith("log_") and params.get("method", "SandboxGetLogs") not in STREAM_METHODS:
        raise FaultSpecError(f'{kind}: invalid method "{params["method"]}": expected one of {", ".join(STREAM_METHODS)}')
    if kind == "disconnect" and "after_entries" in params and params.get("method") not in STREAM_METHODS:
        raise FaultSpecError(f"disconnect: after_entries needs method={' or method='.join(STREAM_METHODS)}")
    if kind == "raw_status" and params.get("variant", "trailers_only") in ("no_trailers", "status_in_headers"):
        if params.get("method", "*") in ("*",) + STREAM_METHODS:
            raise FaultSpecError(f'raw_status: variant {params["variant"]} needs the name of a unary method')


class FaultSet:
    """The active faults, changed at start (``--fault``) and through the control API."""

    def __init__(self) -> None:
        self._faults: List[Fault] = []
        self._next_id = 1
        self._create_times: Dict[str, Deque[float]] = {}
        self.listeners: List[Callable[[], None]] = []

    # Management

    def add(self, spec: Any) -> Fault:
        fault = build_fault(self._next_id, spec)
        self._next_id += 1
        self._faults.append(fault)
        self._changed()
        return fault

    def remove(self, fault_id: int) -> bool:
        before = len(self._faults)
        self._faults = [fault for fault in self._faults if fault.id != fault_id]
        self._changed()
        return len(self._faults) != before

    def clear(self) -> None:
        self._faults = []
        self._create_times.clear()
        self._changed()

    def to_json(self) -> List[Dict[str, Any]]:
        return [fault.to_json() for fault in self._faults]

    def of_kind(self, kind: str) -> List[Fault]:
        return [fault for fault in self._faults if fault.kind == kind]

    def ping_policy(self) -> Optional[Fault]:
        faults = self.of_kind("ping_limit")
        return faults[-1] if faults else None

    def max_concurrent_streams(self) -> Optional[int]:
        limits = [fault.params["limit"] for fault in self.of_kind("max_streams")]
        return min(limits) if limits else None

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    # Per-call decisions

    def plan_call(self, method: str) -> CallPlan:
        plan = CallPlan()
        for fault in self._faults:
            if fault.kind not in ("error", "delay", "disconnect", "raw_status"):
                continue
            if not fault.method_matches(method):
                continue
            if fault.kind == "disconnect" and "after_entries" in fault.params:
                continue  # applied by the streaming handler through plan_stream
            if not fault.take():
                continue
            plan.fired.append(fault.id)
            if fault.kind == "delay":
                plan.delay += fault.params["seconds"]
            elif fault.kind == "error":
                action = ErrorAction(
                    Status[fault.params.get("status", "UNAVAILABLE")],
                    fault.params.get("message", f"{method} failed (injected fault {fault.id})"),
                    fault.params.get("retry_after"),
                )
                if fault.params.get("when", "before") == "before":
                    plan.error_before = plan.error_before or action
                else:
                    plan.error_after = plan.error_after or action
            elif fault.kind == "disconnect":
                plan.disconnect = plan.disconnect or {
                    "when": fault.params.get("when", "before"),
                    "mode": fault.params.get("mode", "fin"),
                }
            else:
                plan.raw_status = plan.raw_status or dict(fault.params)
        if plan.fired:
            self._changed()
        return plan

    def plan_stream(self, method: str, fd: int) -> StreamPlan:
        plan = StreamPlan()
        for fault in self._faults:
            if fault.kind == "disconnect" and "after_entries" in fault.params:
                if not fault.method_matches(method) or not fault.take():
                    continue
                if plan.disconnect_after is None:
                    plan.disconnect_after = fault.params["after_entries"]
                    plan.disconnect_mode = fault.params.get("mode", "fin")
                plan.fired.append(fault.id)
                continue
            if not fault.kind.startswith("log_"):
                continue
            if not fault.method_matches(method, default="SandboxGetLogs") or not fault.fd_matches(fd):
                continue
            if not fault.take():
                continue
            plan.fired.append(fault.id)
            params = fault.params
            if fault.kind == "log_cut" and plan.cut_after is None:
                plan.cut_after = params["after"]
                plan.cut_status = Status[params.get("status", "OK")]
                plan.cut_message = params.get("message")
            elif fault.kind == "log_stall" and plan.stall_after is None:
                plan.stall_after = params.get("after", 0)
                plan.stall_seconds = params["seconds"]
            elif fault.kind == "log_replay":
                plan.replay_entries = max(plan.replay_entries, params["entries"])
            elif fault.kind == "log_empty":
                plan.empty_batches = max(plan.empty_batches, params.get("count", 1))
            elif fault.kind == "log_keepalive":
                plan.keepalive_interval = params["interval"]
        if plan.fired:
            self._changed()
        return plan

    def check_create_rate(self, method: str) -> Optional[ErrorAction]:
        """Return the rejection for a create over the rate limit, else record it as accepted.

        Only accepted calls count towards the limit, so a client that backs off
        gets through once the one-second window has moved on.
        """
        faults = [fault for fault in self.of_kind("create_rate")
                  if fault.method_matches(method, default="SandboxCreate")]
        if not faults:
            return None
        now = time.monotonic()
        times = self._create_times.setdefault(method, deque())
        while times and now - times[0] >= 1.0:
            times.popleft()
        for fault in faults:
            limit = fault.params["limit"]
            if len(times) >= limit:
                fault.seen += 1
                fault.fired += 1
                self._changed()
                return ErrorAction(
                    Status[fault.params.get("status", "RESOURCE_EXHAUSTED")],
                    fault.params.get("message", f"Sandbox creation rate limit ({limit}/s) exceeded"),
                    fault.params.get("retry_after"),
                )
        times.append(now)
        return None

    def plan_image_build(self, definition_text: str) -> ImageBuildPlan:
        """Decide how a new image build goes: instantly, streamed over ImageJoinStreaming, or failing."""
        for kind in ("image_fail", "image_stream"):
            for fault in self.of_kind(kind):
                if fault.params.get("match", "") not in definition_text:
                    continue
                if not fault.take():
                    continue
                self._changed()
                return ImageBuildPlan(
                    mode="fail" if kind == "image_fail" else "stream",
                    lines=fault.params.get("lines", 3),
                    seconds=fault.params.get("seconds", 0.3),
                    message=fault.params.get("message"),
                )
        return ImageBuildPlan()
