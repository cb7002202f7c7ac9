"""The table of implemented RPCs, and request checks shared by their handlers."""

from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .calls import Impl

# Method name -> (handler, server_streaming). Every ModalClient method missing here returns UNIMPLEMENTED.
IMPLEMENTED: Dict[str, Tuple[Impl, bool]] = {}


def rpc(name: str, *, streaming: bool = False) -> Callable[[Impl], Impl]:
    """Register ``handler`` as the implementation of ModalClient method ``name``."""

    def register(handler: Impl) -> Impl:
        IMPLEMENTED[name] = (handler, streaming)
        return handler

    return register


def invalid_argument(field: str, problem: str) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, f"invalid {field}: {problem}")


def require(value: str, field: str) -> str:
    if not value:
        raise GRPCError(Status.INVALID_ARGUMENT, f"missing {field}")
    return value


def check_seconds(value: float, field: str) -> float:
    """Return a request's timeout in seconds; reject negative and non-finite values."""
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise invalid_argument(field, f"{value} is not a finite number of seconds >= 0")
    return value
