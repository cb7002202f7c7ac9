"""The pipeline every RPC goes through: auth, faults, handler, reply, accounting."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional

import h2.exceptions
from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from .faults import ErrorAction
from .status_details import retry_policy_details

if TYPE_CHECKING:
    from .h2transport import ConnectionInfo
    from .server import Emulator

log = logging.getLogger(__name__)

Impl = Callable[["Emulator", Any, "Call"], Awaitable[Any]]

# Request metadata copied into the state dump's recent_calls. Token secrets never are.
_RECORDED_METADATA = ("x-idempotency-key", "x-retry-attempt", "x-throttle-retry-attempt",
                      "x-modal-client-type", "x-modal-client-version", "x-modal-token-id")


class CallCut(Exception):
    """The emulator closed the connection under this call on purpose."""


class Call:
    """One RPC in progress: its stream, metadata, connection and accounting."""

    def __init__(self, emulator: "Emulator", method: str, stream: Any) -> None:
        self.emulator = emulator
        self.method = method
        self.stream = stream
        h2_stream = stream._stream
        self.connection: Optional["ConnectionInfo"] = getattr(h2_stream.connection, "emulator_info", None)
        self.stream_id = h2_stream.id
        self.metadata: Dict[str, str] = {}
        for key, value in (stream.metadata or {}).items():
            if isinstance(value, str) and key not in self.metadata:
                self.metadata[key] = value
        headers = getattr(h2_stream, "emulator_headers", None) or []
        self.grpc_timeout = next((value for name, value in headers if name == "grpc-timeout"), None)
        self.started = time.monotonic()
        self.messages_sent = 0
        self.status: Optional[str] = None

    @property
    def idempotency_key(self) -> Optional[str]:
        return self.metadata.get("x-idempotency-key") or None

    async def send(self, message: Any) -> None:
        await self.stream.send_message(message)
        self.messages_sent += 1

    def finish(self, status: str, message: Optional[str] = None) -> None:
        """Count the call under ``status`` and write the state dump; later calls do nothing."""
        if self.status is not None:
            return
        self.status = status
        details = {
            "connection": self.connection.id if self.connection else None,
            "stream_id": self.stream_id,
            "duration": round(time.monotonic() - self.started, 6),
            "messages_sent": self.messages_sent,
            "grpc_timeout": self.grpc_timeout,
            "metadata": {key: self.metadata[key] for key in _RECORDED_METADATA if key in self.metadata},
        }
        if message:
            details["message"] = message
        self.emulator.state.record_call(self.method, status, **details)
        self.emulator.state.flush()
        if status != "OK":
            log.info("%s on connection %s stream %s: %s %s", self.method, details["connection"],
                     self.stream_id, status, message or "")

    def cut(self, mode: str, reason: str) -> None:
        """Close this call's TCP connection and unwind the handler."""
        self.finish("DISCONNECTED", reason)
        protocol = self.connection.protocol if self.connection else None
        if protocol is not None:
            protocol.close(reason, mode)
        raise CallCut(reason)


def unimplemented_message(method: str) -> str:
    message = f"{method} is not implemented by the mfmodal emulator"
    if method == "AuthTokenGet" or method.endswith("V2"):
        # Modal's Python SDK 1.6 creates V2 sandboxes by default unless a GPU is requested.
        message += "; it serves V1 sandboxes only: set MODAL_SANDBOX_V2=0 for sandboxes without a GPU"
    return message


def _grpc_error(action: ErrorAction) -> GRPCError:
    return GRPCError(action.status, action.message, retry_policy_details(action.retry_after))


async def run_call(emulator: "Emulator", method: str, stream: Any, impl: Optional[Impl],
                   server_streaming: bool) -> None:
    """Serve one RPC and send its final status here, so that grpclib adds no status of its own."""
    call = Call(emulator, method, stream)
    try:
        await _serve(call, impl, server_streaming)
    except CallCut:
        pass
    except GRPCError as exc:
        call.finish(exc.status.name, exc.message)
        await _send_status(call, exc.status, exc.message, exc.details)
    except asyncio.CancelledError:
        call.finish("CANCELLED", "the client reset the stream or the connection closed")
        raise
    except (StreamTerminatedError, h2.exceptions.StreamClosedError, ConnectionError) as exc:
        call.finish("CANCELLED", f"stream closed while sending: {exc}")
    except Exception as exc:  # noqa: BLE001 - a handler bug must become a status, not a dead stream
        log.exception("%s failed with an unexpected error", method)
        message = f"internal emulator error: {type(exc).__name__}: {exc}"
        call.finish("INTERNAL", message)
        await _send_status(call, Status.INTERNAL, message, None)


async def _serve(call: Call, impl: Optional[Impl], server_streaming: bool) -> None:
    emulator = call.emulator
    emulator.check_auth(call.metadata)
    if impl is None:
        raise GRPCError(Status.UNIMPLEMENTED, unimplemented_message(call.method))

    try:
        request = await call.stream.recv_message()
    except DecodeError as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, f"invalid {call.method} request message: {exc}") from None
    if request is None:
        raise GRPCError(Status.INVALID_ARGUMENT, f"missing {call.method} request message")

    plan = emulator.faults.plan_call(call.method)
    if plan.fired:
        log.info("%s: faults %s fire", call.method, plan.fired)
    if plan.delay:
        await asyncio.sleep(plan.delay)
    if plan.disconnect and plan.disconnect["when"] == "before":
        call.cut(plan.disconnect["mode"], f"disconnect fault before {call.method}")
    if plan.error_before:
        raise _grpc_error(plan.error_before)
    rejection = emulator.faults.check_create_rate(call.method)
    if rejection:
        raise _grpc_error(rejection)
    if plan.raw_status and plan.raw_status.get("variant", "trailers_only") in ("trailers_only", "http_error"):
        # These replies carry no response message, so the handler does not run.
        await _send_raw_status(call, plan.raw_status, None)
        return

    response = await impl(emulator, request, call)

    if plan.disconnect and plan.disconnect["when"] == "after":
        call.cut(plan.disconnect["mode"], f"disconnect fault after {call.method}")
    if plan.error_after:
        raise _grpc_error(plan.error_after)
    if plan.raw_status:
        await _send_raw_status(call, plan.raw_status, response)
        return

    if not server_streaming:
        await call.send(response)
    # The client sees the call complete only with the trailers, so counting here still
    # puts the call in state.json before the client can act on the reply.
    call.finish("OK")
    await call.stream.send_trailing_metadata(status=Status.OK)


async def _send_status(call: Call, status: Status, message: Optional[str], details: Any) -> None:
    try:
        await call.stream.send_trailing_metadata(status=status, status_message=message, status_details=details)
    except (h2.exceptions.StreamClosedError, StreamTerminatedError, ConnectionError):
        pass


def _frame(message: Any) -> bytes:
    payload = message.SerializeToString() if message is not None else b""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


async def _send_raw_status(call: Call, params: Dict[str, Any], response: Any) -> None:
    """Send a hand-built response that a correct gRPC server would never send.

    The variants reproduce what clients must survive: a trailers-only reply
    with a verbatim grpc-message, DATA without trailers, a grpc-status of 0 in
    the headers followed by a different one in the trailers, and an HTTP error
    from a proxy.
    """
    h2_stream = call.stream._stream
    variant = params.get("variant", "trailers_only")
    status = Status[params.get("status", "INTERNAL")]
    if "message_hex" in params:
        message: Optional[bytes] = bytes.fromhex(params["message_hex"])
    else:
        message = params["message"].encode() if "message" in params else None
    content_type = "application/grpc+proto"
    status_headers = [("grpc-status", str(status.value))]
    if message is not None:
        status_headers.append(("grpc-message", message))  # type: ignore[arg-type]

    if variant == "trailers_only":
        call.finish(status.name, "raw trailers-only reply")
        await h2_stream.send_headers([(":status", "200"), ("content-type", content_type)] + status_headers,
                                     end_stream=True)
    elif variant == "http_error":
        http_status = params.get("http_status", 503)
        call.finish(f"HTTP_{http_status}", "raw HTTP error reply")
        await h2_stream.send_headers([(":status", str(http_status)), ("content-type", "text/plain")])
        await h2_stream.send_data(b"upstream connect error\n", end_stream=True)
    elif variant == "no_trailers":
        call.finish("NO_STATUS", "raw reply without trailers")
        await h2_stream.send_headers([(":status", "200"), ("content-type", content_type)])
        await h2_stream.send_data(_frame(response), end_stream=True)
    else:  # status_in_headers
        call.finish(status.name, "raw reply with grpc-status 0 in the headers")
        await h2_stream.send_headers([(":status", "200"), ("content-type", content_type), ("grpc-status", "0")])
        await h2_stream.send_data(_frame(response))
        await h2_stream.send_headers(status_headers, end_stream=True)
    # Keep grpclib's Stream from appending trailers of its own when the handler returns.
    call.stream._send_trailing_metadata_done = True
