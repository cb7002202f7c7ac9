"""HTTP/2 connection hooks on top of grpclib's server: stream limits, GOAWAY, disconnects.

grpclib builds one ``H2Protocol`` per TCP connection around an h2
``H2Connection``. The subclasses here keep per-connection statistics, advertise a
lower SETTINGS_MAX_CONCURRENT_STREAMS on request, refuse streams over that limit
or above a GOAWAY's last stream id with RST_STREAM(REFUSED_STREAM), send GOAWAY
frames and cut connections for fault injection.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, cast

from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.metadata import encode_grpc_message
from grpclib.protocol import Connection, EventsProcessor, H2Protocol
from grpclib.server import Handler
from h2.config import H2Configuration
from h2.connection import H2Connection, _decode_headers
from h2.errors import ErrorCodes
from h2.events import PingReceived
from h2.settings import SettingCodes, Settings
from h2.stream import StreamClosedBy
from hyperframe.frame import GoAwayFrame, RstStreamFrame, WindowUpdateFrame

from .faults import Fault, FaultSet

log = logging.getLogger(__name__)

# h2's own default for SETTINGS_MAX_CONCURRENT_STREAMS, used when no fault lowers it.
DEFAULT_MAX_CONCURRENT_STREAMS = 100
MAX_STREAM_ID = 2 ** 31 - 1
# Connections kept in the state dump after they closed, and refused streams kept per connection.
CLOSED_CONNECTIONS_KEPT = 200
REFUSED_STREAMS_KEPT = 100

# gRPC over HTTP/2: TimeoutValue is a positive integer of at most 8 digits, then a unit.
_GRPC_TIMEOUT_RE = re.compile(r"^[0-9]{1,8}[HMSmun]$")


class ConnectionInfo:
    """Statistics and fault state of one HTTP/2 connection."""

    def __init__(self, connection_id: int, peer: Any) -> None:
        self.id = connection_id
        self.peer = peer
        self.opened_at = time.time()
        self.closed_at: Optional[float] = None
        self.streams_total = 0
        self.streams_open = 0
        self.max_streams_open = 0
        self.refused_streams: List[Dict[str, Any]] = []
        self.advertised_max_streams = DEFAULT_MAX_CONCURRENT_STREAMS
        self.goaway_last_stream_id: Optional[int] = None
        self.goaway_counts: Dict[int, int] = {}
        self.pings_received = 0
        self.ping_strikes = 0
        self.last_ping_at: Optional[float] = None
        self.closed_by_emulator: Optional[str] = None
        self.protocol: Optional["EmulatorProtocol"] = None

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "peer": list(self.peer) if isinstance(self.peer, tuple) else self.peer,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "streams_total": self.streams_total,
            "streams_open": self.streams_open,
            "max_streams_open": self.max_streams_open,
            "advertised_max_concurrent_streams": self.advertised_max_streams,
            "refused_streams": self.refused_streams,
            "goaway_last_stream_id": self.goaway_last_stream_id,
            "pings_received": self.pings_received,
            "ping_strikes": self.ping_strikes,
            "closed_by_emulator": self.closed_by_emulator,
        }


class EmulatorH2Connection(H2Connection):
    """H2Connection that refuses excess streams with RST_STREAM instead of failing the connection.

    Plain h2 rejects a stream over SETTINGS_MAX_CONCURRENT_STREAMS with a
    connection-wide GOAWAY(PROTOCOL_ERROR). RFC 9113 section 5.1.2 also allows
    a stream error, and REFUSED_STREAM signals that the client may retry.
    """

    def __init__(self, config: H2Configuration, info: ConnectionInfo, max_streams: int) -> None:
        super().__init__(config=config)
        self.emulator_info = info
        self.refuse_streams_above: Optional[int] = None
        self._refused: Set[int] = set()
        self.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )

    def _receive_headers_frame(self, frame: Any) -> Tuple[List[Any], List[Any]]:
        stream_id = frame.stream_id
        if stream_id in self.streams or stream_id <= self.highest_inbound_stream_id:
            return super()._receive_headers_frame(frame)

        reason = None
        if self.refuse_streams_above is not None and stream_id > self.refuse_streams_above:
            reason = "after GOAWAY"
        elif self.open_inbound_streams + 1 > self.local_settings.max_concurrent_streams:
            reason = f"over SETTINGS_MAX_CONCURRENT_STREAMS={self.local_settings.max_concurrent_streams}"
        if reason is None:
            return super()._receive_headers_frame(frame)

        # Decode the header block anyway: HPACK state is shared by the whole connection.
        list(_decode_headers(self.decoder, frame.data))
        self.highest_inbound_stream_id = stream_id
        self._closed_streams[stream_id] = StreamClosedBy.SEND_RST_STREAM
        self._refused.add(stream_id)
        refused = self.emulator_info.refused_streams
        refused.append({"stream_id": stream_id, "reason": reason, "at": time.time()})
        del refused[:-REFUSED_STREAMS_KEPT]
        log.info("connection %d: refused stream %d %s", self.emulator_info.id, stream_id, reason)
        reset = RstStreamFrame(stream_id)
        reset.error_code = ErrorCodes.REFUSED_STREAM
        return [reset], []

    def _receive_data_frame(self, frame: Any) -> Tuple[List[Any], List[Any]]:
        if frame.stream_id not in self._refused:
            return super()._receive_data_frame(frame)
        # DATA that was in flight when the stream was refused: keep the connection's flow
        # control window open, and send nothing, as the stream is already reset.
        increment = self._inbound_flow_control_window_manager.process_bytes(frame.flow_controlled_length)
        if not increment:
            return [], []
        return [WindowUpdateFrame(0, window_increment=increment)], []


class EmulatorProtocol(H2Protocol):
    def __init__(self, handler: Handler, config: Configuration, h2_config: H2Configuration,
                 hub: "ConnectionHub") -> None:
        super().__init__(handler, config, h2_config)
        self.hub = hub
        self.info = hub.new_connection(self)
        self.h2: Optional[EmulatorH2Connection] = None
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The same steps as grpclib's H2Protocol.connection_made, with EmulatorH2Connection.
        self.transport = cast(asyncio.Transport, transport)
        self.info.peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        max_streams = self.hub.max_concurrent_streams()
        self.info.advertised_max_streams = max_streams
        h2_conn = EmulatorH2Connection(self.h2_config, self.info, max_streams)
        h2_conn.initiate_connection()
        initial = h2_conn.local_settings.initial_window_size
        conn_delta = self.config.http2_connection_window_size - initial
        stream_delta = self.config.http2_stream_window_size - initial
        if conn_delta:
            h2_conn.increment_flow_control_window(conn_delta)
        if stream_delta:
            h2_conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: self.config.http2_stream_window_size})
        self.h2 = h2_conn

        self.connection = Connection(h2_conn, self.transport, config=self.config)
        self.connection.emulator_info = self.info  # type: ignore[attr-defined]
        self.connection.flush()
        self.connection.initialize()
        self.processor = EventsProcessor(self.handler, self.connection)
        self.processor.processors[PingReceived] = self._ping_received
        log.debug("connection %d: opened from %s", self.info.id, self.info.peer)

    def _ping_received(self, event: PingReceived) -> None:
        """Count PINGs, and police them like gRPC servers do when a ping_limit fault is active.

        A PING that comes sooner than min_interval after the previous one is a
        strike. Once the strikes exceed the fault's allowance (default 2), the
        connection ends with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"), as gRPC
        servers end a connection from a client that pings too often.
        """
        now = time.monotonic()
        info = self.info
        info.pings_received += 1
        previous, info.last_ping_at = info.last_ping_at, now
        policy = self.hub.faults.ping_policy()
        if policy is None or previous is None or now - previous >= policy.params["min_interval"]:
            return
        if self.transport is None or self.transport.is_closing():
            return
        info.ping_strikes += 1
        if info.ping_strikes > policy.params.get("strikes", 2):
            policy.fired += 1
            self.send_goaway(self.h2.highest_inbound_stream_id if self.h2 else 0,
                             ErrorCodes.ENHANCE_YOUR_CALM, b"too_many_pings")
            self.close("too many pings")

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.hub.connection_closed(self.info)

    # Fault actions

    def set_max_concurrent_streams(self, limit: int) -> None:
        if self.h2 is None or self.transport is None or self.transport.is_closing():
            return
        self.info.advertised_max_streams = limit
        self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: limit})
        self.connection.flush()

    def send_goaway(self, last_stream_id: int, error_code: int = ErrorCodes.NO_ERROR, debug: bytes = b"") -> None:
        """Write a GOAWAY frame without telling h2.

        h2 closes its state machine once it sends GOAWAY and would then refuse
        to finish the streams in flight, which a graceful shutdown must finish.
        """
        if self.transport is None or self.transport.is_closing():
            return
        self.connection.flush()
        frame = GoAwayFrame(0, last_stream_id=last_stream_id, error_code=error_code, additional_data=debug)
        self.transport.write(frame.serialize())
        log.info("connection %d: sent GOAWAY last_stream_id=%d error_code=%s", self.info.id, last_stream_id,
                 ErrorCodes(error_code).name if error_code in ErrorCodes._value2member_map_ else error_code)

    def start_goaway(self, fault: Fault) -> None:
        """Begin a shutdown as RFC 9113 section 6.8 describes, then close once the streams drain."""
        grace = fault.params.get("grace", 0.0)
        if grace > 0:
            self.send_goaway(MAX_STREAM_ID)
            asyncio.get_running_loop().call_later(grace, self._final_goaway, fault)
        else:
            self._final_goaway(fault)

    def _final_goaway(self, fault: Fault) -> None:
        if self.h2 is None or self.transport is None or self.transport.is_closing():
            return
        error_code = ErrorCodes[fault.params.get("code", "NO_ERROR")]
        last_stream_id = self.h2.highest_inbound_stream_id
        self.h2.refuse_streams_above = last_stream_id
        self.info.goaway_last_stream_id = last_stream_id
        self.send_goaway(last_stream_id, error_code, fault.params.get("debug", "").encode())
        if error_code != ErrorCodes.NO_ERROR:
            self.close("GOAWAY " + error_code.name)
            return
        drain = fault.params.get("drain", 60.0)
        asyncio.get_running_loop().call_later(drain, self.close, "GOAWAY drain timeout")
        self.close_if_drained()

    def close_if_drained(self) -> None:
        if self.info.goaway_last_stream_id is not None and self.info.streams_open == 0:
            self.close("GOAWAY, all streams finished")

    def close(self, reason: str, mode: str = "fin") -> None:
        """Close the TCP connection: "fin" flushes what is buffered, "rst" resets it at once."""
        if self.transport is None or self.transport.is_closing():
            return
        self.info.closed_by_emulator = reason
        log.info("connection %d: closing (%s, %s)", self.info.id, mode, reason)
        if mode == "rst":
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER on with a zero timeout makes close() send RST.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()


class EmulatorHandler(Handler):
    """grpclib's request dispatcher plus stream accounting and a strict grpc-timeout check."""

    def __init__(self, *args: Any, hub: "ConnectionHub") -> None:
        super().__init__(*args)
        self.hub = hub

    def accept(self, stream: Any, headers: Any, release_stream: Callable[[], Any]) -> None:
        info: ConnectionInfo = stream.connection.emulator_info
        info.streams_total += 1
        info.streams_open += 1
        info.max_streams_open = max(info.max_streams_open, info.streams_open)
        stream.emulator_headers = headers

        def release() -> None:
            try:
                release_stream()
            finally:
                info.streams_open -= 1
                if info.protocol is not None:
                    info.protocol.close_if_drained()

        timeout = next((value for name, value in headers if name == "grpc-timeout"), None)
        if timeout is not None and not _GRPC_TIMEOUT_RE.match(timeout):
            path = next((value for name, value in headers if name == ":path"), "")
            self.loop.create_task(self._reject_timeout(stream, path, timeout, release))
        else:
            super().accept(stream, headers, release)
        self.hub.stream_accepted(info)

    async def _reject_timeout(self, stream: Any, path: str, timeout: str, release: Callable[[], None]) -> None:
        message = f'malformed grpc-timeout header "{timeout}": expected 1 to 8 digits and a unit of H, M, S, m, u, n'
        try:
            await stream.send_headers([
                (":status", "200"),
                ("content-type", "application/grpc+proto"),
                ("grpc-status", str(Status.INTERNAL.value)),
                ("grpc-message", encode_grpc_message(message)),
            ], end_stream=True)
            if stream.closable:
                stream.reset_nowait()
        finally:
            release()
        self.hub.record_rejected_call(path.rsplit("/", 1)[-1], "INTERNAL", message=message, grpc_timeout=timeout)


class ConnectionHub:
    """All connections of the server, and the connection-level faults applied to them."""

    def __init__(self, faults: FaultSet, record_call: Callable[..., None]) -> None:
        self.faults = faults
        self._record_call = record_call
        self.connections: Dict[int, ConnectionInfo] = {}
        self.closed: List[ConnectionInfo] = []
        self._next_id = 1
        faults.listeners.append(self._faults_changed)
        self._applied_limit = DEFAULT_MAX_CONCURRENT_STREAMS

    def max_concurrent_streams(self) -> int:
        return self.faults.max_concurrent_streams() or DEFAULT_MAX_CONCURRENT_STREAMS

    def new_connection(self, protocol: EmulatorProtocol) -> ConnectionInfo:
        info = ConnectionInfo(self._next_id, None)
        info.protocol = protocol
        self._next_id += 1
        self.connections[info.id] = info
        return info

    def connection_closed(self, info: ConnectionInfo) -> None:
        info.closed_at = time.time()
        info.protocol = None
        self.connections.pop(info.id, None)
        self.closed.append(info)
        del self.closed[:-CLOSED_CONNECTIONS_KEPT]
        log.debug("connection %d: closed after %d streams", info.id, info.streams_total)

    def stream_accepted(self, info: ConnectionInfo) -> None:
        if info.goaway_last_stream_id is not None or info.protocol is None:
            return
        for fault in self.faults.of_kind("goaway"):
            count = info.goaway_counts.get(fault.id, 0) + 1
            info.goaway_counts[fault.id] = count
            if count == fault.params["after"] and (fault.times is None or fault.fired < fault.times):
                fault.seen += 1
                fault.fired += 1
                info.protocol.start_goaway(fault)
                break

    def record_rejected_call(self, method: str, status: str, **details: Any) -> None:
        self._record_call(method, status, **details)

    def _faults_changed(self) -> None:
        limit = self.max_concurrent_streams()
        if limit == self._applied_limit:
            return
        self._applied_limit = limit
        for info in list(self.connections.values()):
            if info.protocol is not None:
                info.protocol.set_max_concurrent_streams(limit)

    def to_json(self) -> List[Dict[str, Any]]:
        return [info.to_json() for info in self.closed + list(self.connections.values())]
