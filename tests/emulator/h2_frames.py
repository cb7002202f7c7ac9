"""A frame-level HTTP/2 gRPC client for checking what the emulator puts on the wire.

h2's client state machine stops accepting frames once it has received GOAWAY,
so graceful shutdowns, refused streams and hand-built replies are checked here
with hyperframe and hpack directly.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from hpack import Decoder, Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from emulator_client import TOKEN_ID, TOKEN_SECRET

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WINDOW = 2 ** 30


def grpc_frame(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def grpc_messages(data: bytes) -> List[bytes]:
    messages = []
    while len(data) >= 5:
        length = int.from_bytes(data[1:5], "big")
        messages.append(data[5:5 + length])
        data = data[5 + length:]
    return messages


@dataclass
class StreamResult:
    headers: Optional[List[Tuple[str, Any]]] = None
    data: bytes = b""
    trailers: Optional[List[Tuple[str, Any]]] = None
    reset_code: Optional[int] = None
    ended: bool = False

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    def header(self, name: str) -> Optional[str]:
        for block in (self.trailers, self.headers):
            for key, value in block or []:
                if key == name:
                    return value
        return None


@dataclass
class FrameClient:
    host: str
    port: int
    sock: socket.socket = field(init=False)
    streams: Dict[int, StreamResult] = field(default_factory=dict)
    goaways: List[GoAwayFrame] = field(default_factory=list)
    settings: List[Dict[int, int]] = field(default_factory=list)
    closed: bool = False
    connection_error: Optional[BaseException] = None

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=5)
        self.encoder = Encoder()
        self.decoder = Decoder()
        self._buffer = b""
        self._next_stream_id = 1
        settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: WINDOW})
        self.sock.sendall(PREFACE + settings.serialize() + WindowUpdateFrame(0, window_increment=WINDOW).serialize())

    def close(self) -> None:
        self.sock.close()

    def send(self, frame: Frame) -> None:
        self.sock.sendall(frame.serialize())

    def _reply(self, frame: Frame) -> None:
        """Send an ACK or WINDOW_UPDATE; a connection the server already closed is recorded, not raised."""
        try:
            self.send(frame)
        except OSError as exc:
            self.connection_error = exc
            self.closed = True

    def request(self, method: str, payload: Optional[bytes], *, extra_headers: Tuple[Tuple[str, str], ...] = (),
                token: bool = True) -> int:
        """Open a stream for ModalClient/``method``; ``payload`` None sends the headers only (no END_STREAM)."""
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        headers = [(":method", "POST"), (":scheme", "http"), (":path", f"/modal.client.ModalClient/{method}"),
                   (":authority", f"{self.host}:{self.port}"), ("content-type", "application/grpc"),
                   ("te", "trailers")]
        if token:
            headers += [("x-modal-token-id", TOKEN_ID), ("x-modal-token-secret", TOKEN_SECRET)]
        headers += list(extra_headers)
        # HEADERS and DATA go out in one write, so a server that closes right after the
        # HEADERS cannot make the DATA write fail.
        frames = HeadersFrame(stream_id, data=self.encoder.encode(headers), flags=["END_HEADERS"]).serialize()
        if payload is not None:
            frames += DataFrame(stream_id, data=grpc_frame(payload), flags=["END_STREAM"]).serialize()
        self.sock.sendall(frames)
        self.streams[stream_id] = StreamResult()
        return stream_id

    def pump(self, until: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Read frames until ``until()`` holds, the connection closes, or ``timeout`` passes."""
        end = time.monotonic() + timeout
        while not until():
            if self.closed or time.monotonic() >= end:
                return until()
            self.sock.settimeout(max(end - time.monotonic(), 0.01))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as exc:
                self.connection_error = exc
                self.closed = True
                continue
            if not chunk:
                self.closed = True
                continue
            self._buffer += chunk
            self._parse()
        return True

    def _parse(self) -> None:
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
            if len(self._buffer) < 9 + length:
                return
            frame.parse_body(memoryview(self._buffer[9:9 + length]))
            self._buffer = self._buffer[9 + length:]
            self._handle(frame)

    def _handle(self, frame: Frame) -> None:
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self.settings.append(dict(frame.settings))
                self._reply(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, PingFrame):
            if "ACK" not in frame.flags:
                self._reply(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        elif isinstance(frame, GoAwayFrame):
            self.goaways.append(frame)
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            stream = self.streams.setdefault(frame.stream_id, StreamResult())
            block = [(_text(k), _text(v)) for k, v in self.decoder.decode(bytes(frame.data), raw=True)]
            if stream.headers is None:
                stream.headers = block
            else:
                stream.trailers = block
            if "END_STREAM" in frame.flags:
                stream.ended = True
        elif isinstance(frame, DataFrame):
            stream = self.streams.setdefault(frame.stream_id, StreamResult())
            stream.data += bytes(frame.data)
            if frame.flow_controlled_length:
                self._reply(WindowUpdateFrame(frame.stream_id, window_increment=frame.flow_controlled_length))
                self._reply(WindowUpdateFrame(0, window_increment=frame.flow_controlled_length))
            if "END_STREAM" in frame.flags:
                stream.ended = True
        elif isinstance(frame, RstStreamFrame):
            stream = self.streams.setdefault(frame.stream_id, StreamResult())
            if stream.reset_code is None:
                stream.reset_code = frame.error_code

    def max_concurrent_streams(self) -> Optional[int]:
        values = [s[SettingsFrame.MAX_CONCURRENT_STREAMS] for s in self.settings
                  if SettingsFrame.MAX_CONCURRENT_STREAMS in s]
        return values[-1] if values else None


def _text(value: bytes) -> Any:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return value
