"""The ModalClient service: implemented RPCs plus UNIMPLEMENTED for every other method."""

from __future__ import annotations

from typing import Any, Callable, Dict

from modal_proto.api_grpc import ModalClientBase

from . import objects_api, sandbox_api  # noqa: F401 - importing registers their RPCs
from .calls import run_call
from .rpc import IMPLEMENTED


def _method(name: str, impl: Any, streaming: bool) -> Callable[[Any, Any], Any]:
    async def handle(self: "ModalServicer", stream: Any) -> None:
        await run_call(self.emulator, name, stream, impl, streaming)

    handle.__name__ = name
    return handle


def _build_servicer_class() -> type:
    # ModalClientBase declares each method abstract (285 in modal 1.6.4). Methods without an
    # implementation still go through run_call, which checks the token and then
    # returns UNIMPLEMENTED, so every call is counted in the state dump.
    namespace: Dict[str, Any] = {
        "__doc__": "grpclib servicer for Modal's ModalClient service.",
        "__init__": lambda self, emulator: setattr(self, "emulator", emulator),
    }
    for name in ModalClientBase.__abstractmethods__:
        impl, streaming = IMPLEMENTED.get(name, (None, False))
        namespace[name] = _method(name, impl, streaming)
    unknown = set(IMPLEMENTED) - set(ModalClientBase.__abstractmethods__)
    if unknown:
        raise RuntimeError(f"handlers for methods that ModalClient does not have: {sorted(unknown)}")
    return type("ModalServicer", (ModalClientBase,), namespace)


ModalServicer = _build_servicer_class()
