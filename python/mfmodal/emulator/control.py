"""The control API: JSON over HTTP/1.1 on a second loopback port.

Routes (every response is JSON, and the connection closes after one exchange):

    GET    /health        {"ok": true}
    GET    /state         the state dump, as in state.json
    GET    /faults        the active faults
    POST   /faults        add one fault; body {"spec": "KIND:k=v,..."} or {"kind": "KIND", "k": "v", ...}
    DELETE /faults        remove every fault
    DELETE /faults/ID     remove one fault
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import TYPE_CHECKING, Any, Optional, Tuple

from .faults import FaultSpecError

if TYPE_CHECKING:
    from .server import Emulator

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
READ_TIMEOUT_SECONDS = 10.0
_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error"}


class ControlServer:
    def __init__(self, emulator: "Emulator") -> None:
        self.emulator = emulator
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self, sock: socket.socket) -> int:
        self._server = await asyncio.start_server(self._serve, sock=sock)
        return sock.getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, payload = await asyncio.wait_for(self._read_and_route(reader), READ_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            status, payload = 400, {"error": f"request not received within {READ_TIMEOUT_SECONDS:.0f} s"}
        except (ValueError, UnicodeDecodeError) as exc:
            status, payload = 400, {"error": f"malformed HTTP request: {exc}"}
        except Exception as exc:  # noqa: BLE001 - report it to the caller instead of dropping the connection
            log.exception("control API request failed")
            status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        body = (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        try:
            writer.write(head.encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _read_and_route(self, reader: asyncio.StreamReader) -> Tuple[int, Any]:
        request_line = (await reader.readline()).decode("latin-1").strip()
        parts = request_line.split(" ")
        if len(parts) != 3:
            raise ValueError(f"invalid request line {request_line!r}")
        method, path = parts[0], parts[1]
        length = 0
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length > MAX_BODY_BYTES:
            return 413, {"error": f"body of {length} bytes is over the limit of {MAX_BODY_BYTES}"}
        body = await reader.readexactly(length) if length else b""
        return self.route(method, path, body)

    def route(self, method: str, path: str, body: bytes) -> Tuple[int, Any]:
        emulator = self.emulator
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/health" and method == "GET":
            return 200, {"ok": True}
        if path == "/state" and method == "GET":
            return 200, emulator.snapshot()
        if path == "/faults":
            if method == "GET":
                return 200, emulator.faults.to_json()
            if method == "POST":
                return self._add_fault(body)
            if method == "DELETE":
                count = len(emulator.faults.to_json())
                emulator.faults.clear()
                if count:
                    log.info("control API: removed all %d faults", count)
                return 200, {"removed": count}
            return 405, {"error": f"{method} is not allowed on /faults"}
        if path.startswith("/faults/") and method == "DELETE":
            try:
                fault_id = int(path[len("/faults/"):])
            except ValueError:
                return 400, {"error": f"invalid fault id in {path!r}"}
            if not emulator.faults.remove(fault_id):
                return 404, {"error": f"fault {fault_id} not found"}
            log.info("control API: removed fault %d", fault_id)
            return 200, {"removed": 1}
        return 404, {"error": f"no route for {method} {path}"}

    def _add_fault(self, body: bytes) -> Tuple[int, Any]:
        try:
            data = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            return 400, {"error": f"invalid JSON body: {exc}"}
        if not isinstance(data, dict):
            return 400, {"error": "invalid body: expected a JSON object"}
        spec = data["spec"] if set(data) == {"spec"} else data
        try:
            fault = self.emulator.faults.add(spec)
        except FaultSpecError as exc:
            return 400, {"error": str(exc)}
        log.info("control API: added fault %d: %s %s", fault.id, fault.kind, fault.params)
        return 201, {"fault": fault.to_json()}
