"""An HTTP/1.1 proxy on loopback between the engine and moto's S3 server that
can stand in for the parts of S3 that moto lacks and inject faults.

Every request is read whole, recorded and matched against the rules in
order.  Unless a rule supplied the response, the request is then checked as
S3 checks it and forwarded to moto on a fresh upstream connection.  The proxy can also terminate TLS, so
the engine's https path runs against moto too.

What it adds to moto 5.2.5, which stores bodies without checking them:

* checksums: Content-MD5, x-amz-checksum-crc32, x-amz-checksum-sha256 and
  a signed x-amz-content-sha256 are compared with the body, and a mismatch
  is answered as S3 answers it (400 BadDigest or XAmzContentSHA256Mismatch);
* a server clock: with ``clock_offset`` set, the Date header of every
  response is shifted, and requests whose x-amz-date is more than 15 minutes
  from that clock get 403 RequestTimeTooSkewed, as from S3.
"""

import asyncio
import base64
import calendar
import email.utils
import hashlib
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

# S3 rejects requests more than 15 minutes away from its clock.
MAX_SKEW_SECONDS = 15 * 60


class ResetConnection(Exception):
    """Raised by an action to drop the client connection without a reply."""


@dataclass
class Connection:
    """One client connection: its number (1 for the first accepted) and
    whether to close it when the next request arrives."""
    number: int
    close_on_next_request: bool = False


@dataclass
class Request:
    method: str
    target: str
    headers: list
    body: bytes = b""
    connection: Connection = None

    def header(self, name):
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def query(self):
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    @property
    def part_number(self):
        values = self.query.get("partNumber")
        return int(values[0]) if values else None

    @property
    def operation(self):
        """The S3 API operation, from the method and query."""
        q = self.query
        if self.method == "PUT":
            return "UploadPart" if "partNumber" in q else "PutObject"
        if self.method == "POST":
            if "uploads" in q:
                return "CreateMultipartUpload"
            if "uploadId" in q:
                return "CompleteMultipartUpload"
        if self.method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
        if self.method == "HEAD":
            return "HeadObject"
        if self.method == "GET":
            if "uploadId" in q:
                return "ListParts"
            if "uploads" in q:
                return "ListMultipartUploads"
            if "list-type" in q:
                return "ListObjectsV2"
            return "GetObject"
        return self.method


@dataclass
class Response:
    status: int
    reason: str = "OK"
    headers: list = field(default_factory=list)
    body: bytes = b""
    # Chunked bodies sent piece by piece with a pause between them.
    pieces: list = None
    interval: float = 0.0
    # Send the head with the full Content-Length but only this many body
    # bytes, then drop the connection.
    cut_after: int = None


@dataclass
class Record:
    """One request as the proxy received it, and the response it sent."""
    operation: str
    method: str
    target: str
    part_number: int
    headers: dict
    body_length: int
    sha256: str
    md5_b64: str
    crc32_b64: str
    sha256_b64: str
    text: str = ""  # the body, when it is small enough to keep
    connection: int = 0  # the client connection's number
    status: int = 0
    answered_by: str = "moto"
    error_code: str = ""


def error_body(code, message, extra=""):
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
            "<RequestId>FAULTPROXY</RequestId></Error>").encode()


def error_response(status, code, message, extra=""):
    return Response(status, "Error", [("Content-Type", "application/xml")],
                    error_body(code, message, extra))


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def sha256_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# Actions for rules.  Each is an async function (proxy, request) that returns
# a Response to send, or None to go on with the normal handling.

def respond(status, code=None, message="injected by the test proxy", body=None,
            headers=None):
    async def action(proxy, req):
        if body is not None:
            return Response(status, "Injected", list(headers or []), body)
        return error_response(status, code, message)
    return action


def respond_slowly(status, pieces, interval):
    """A chunked response whose pieces come interval seconds apart."""
    async def action(proxy, req):
        return Response(status, "OK", [("Content-Type", "application/xml")],
                        pieces=list(pieces), interval=interval)
    return action


def reset():
    async def action(proxy, req):
        raise ResetConnection()
    return action


def close_on_next_request():
    """Handle the request normally and keep the connection open, then close
    it cleanly (a FIN, no reply) once the next request on it has arrived
    whole, as a server does when its idle timeout races a new request."""
    async def action(proxy, req):
        req.connection.close_on_next_request = True
        return None
    return action


def corrupt():
    """Flip one byte in the middle of the body, as a bad link would."""
    async def action(proxy, req):
        if req.body:
            middle = len(req.body) // 2
            req.body = (req.body[:middle] + bytes([req.body[middle] ^ 0xFF])
                        + req.body[middle + 1:])
        return None
    return action


def forward_then(edit):
    """Forward to moto, then let edit(response) change the response."""
    async def action(proxy, req):
        resp = await proxy.handle_normally(req)
        edit(resp)
        return resp
    return action


def cut_response(fraction=0.5):
    """Forward to moto, then send only part of the response body."""
    async def action(proxy, req):
        resp = await proxy.handle_normally(req)
        resp.cut_after = int(len(resp.body) * fraction)
        return resp
    return action


def delay(seconds):
    async def action(proxy, req):
        await asyncio.sleep(seconds)
        return None
    return action


@dataclass
class Rule:
    match: object
    action: object
    times: int = 1  # None for every matching request
    hits: int = 0
    # A "cut" rule runs before the body is read: the proxy reads half of
    # it and drops the connection.
    cut: bool = False


class FaultProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1", ssl_context=None,
                 verify_checksums=True):
        self.upstream = (upstream_host, upstream_port)
        self.ssl_context = ssl_context
        self.verify_checksums = verify_checksums
        self.clock_offset = 0
        self.rules = []
        self.records = []
        self.connections = 0  # client connections accepted
        self.port = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server = None
        self._started = threading.Event()

    # Life cycle.

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        self._loop.run_forever()

    async def _start(self):
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self.ssl_context, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self):
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fault proxy did not start within 10 s")
        return self

    def stop(self):
        async def shutdown():
            self._server.close()
            # Handlers still sleeping in a delay rule end here, not after
            # the loop is gone.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self):
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # Rules and records.

    def add_rule(self, match, action, times=1):
        rule = Rule(match, action, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def add_cut(self, match, times=1):
        rule = Rule(match, None, times, cut=True)
        with self._lock:
            self.rules.append(rule)
        return rule

    def find(self, operation=None, part_number=None):
        with self._lock:
            return [r for r in self.records
                    if (operation is None or r.operation == operation)
                    and (part_number is None or r.part_number == part_number)]

    def _take_rule(self, req, cut):
        with self._lock:
            for rule in self.rules:
                if rule.cut != cut or (rule.times is not None and rule.hits >= rule.times):
                    continue
                if rule.match(req):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, req):
        body = req.body
        record = Record(
            operation=req.operation, method=req.method, target=req.target,
            part_number=req.part_number,
            headers={k.lower(): v for k, v in req.headers},
            body_length=len(body), sha256=hashlib.sha256(body).hexdigest(),
            md5_b64=base64.b64encode(hashlib.md5(body).digest()).decode(),
            crc32_b64=crc32_b64(body), sha256_b64=sha256_b64(body),
            text=body.decode("utf-8", "replace") if len(body) < 65536 else "",
            connection=req.connection.number)
        with self._lock:
            self.records.append(record)
        return record

    # S3's own checks.

    def server_time(self):
        return time.time() + self.clock_offset

    def _check_like_s3(self, req):
        """Return an error Response where S3 would reject req, else None."""
        if self.clock_offset:
            amz_date = req.header("x-amz-date")
            try:
                sent = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
            except (TypeError, ValueError):
                sent = 0
            if abs(sent - self.server_time()) > MAX_SKEW_SECONDS:
                server = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.server_time()))
                return error_response(
                    403, "RequestTimeTooSkewed",
                    "The difference between the request time and the current "
                    "time is too large.",
                    f"<RequestTime>{amz_date}</RequestTime><ServerTime>{server}"
                    f"</ServerTime><MaxAllowedSkewMilliseconds>900000"
                    f"</MaxAllowedSkewMilliseconds>")
        if not self.verify_checksums or req.method not in ("PUT", "POST"):
            return None
        payload = req.header("x-amz-content-sha256")
        if (payload and payload != "UNSIGNED-PAYLOAD"
                and payload != hashlib.sha256(req.body).hexdigest()):
            return error_response(
                400, "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match "
                "what was computed.")
        md5 = req.header("content-md5")
        if md5 and md5 != base64.b64encode(hashlib.md5(req.body).digest()).decode():
            return error_response(
                400, "BadDigest",
                "The Content-MD5 you specified did not match what we received.")
        crc = req.header("x-amz-checksum-crc32")
        if crc and crc != crc32_b64(req.body):
            return error_response(
                400, "BadDigest",
                "The CRC32 you specified did not match the calculated checksum.")
        sha256 = req.header("x-amz-checksum-sha256")
        if sha256 and sha256 != sha256_b64(req.body):
            return error_response(
                400, "BadDigest",
                "The SHA256 you specified did not match the calculated checksum.")
        return None

    # Forwarding.

    async def handle_normally(self, req):
        rejected = self._check_like_s3(req)
        if rejected is not None:
            rejected.answered_by = "checks"
            return rejected
        return await self._forward(req)

    async def _forward(self, req):
        reader, writer = await asyncio.open_connection(*self.upstream, limit=1 << 20)
        try:
            lines = [f"{req.method} {req.target} HTTP/1.1"]
            for name, value in req.headers:
                if name.lower() not in ("connection", "keep-alive"):
                    lines.append(f"{name}: {value}")
            lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            parts = status_line.split(" ", 2)
            headers = [tuple(h.split(":", 1)) for h in header_lines if ":" in h]
            headers = [(k.strip(), v.strip()) for k, v in headers]
            status = int(parts[1])
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
            chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower()
                          for k, v in headers)
            if req.method == "HEAD" or status in (204, 304):
                body = b""
            elif chunked:
                body = await self._read_chunked(reader)
            elif length is not None:
                body = await reader.readexactly(length)
            else:
                body = await reader.read()
            keep = [(k, v) for k, v in headers
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                         "content-length")
                    or (req.method == "HEAD" and k.lower() == "content-length")]
            return Response(status, parts[2] if len(parts) > 2 else "", keep, body)
        finally:
            writer.close()

    @staticmethod
    async def _read_chunked(reader):
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readline() not in (b"\r\n", b""):
                    pass  # trailer fields
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    # Serving.

    async def _send(self, writer, req, resp):
        headers = [(k, v) for k, v in resp.headers if k.lower() != "date"]
        headers.append(("Date", email.utils.formatdate(self.server_time(), usegmt=True)))
        lines = [f"HTTP/1.1 {resp.status} {resp.reason}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if resp.pieces is not None:
            lines.append("Transfer-Encoding: chunked")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            for piece in resp.pieces:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(resp.interval)
            writer.write(b"0\r\n\r\n")
        elif resp.cut_after is not None:
            lines.append(f"Content-Length: {len(resp.body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                         + resp.body[:resp.cut_after])
            await writer.drain()
            raise ResetConnection()
        else:
            if req.method != "HEAD":
                lines.append(f"Content-Length: {len(resp.body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + resp.body)
        await writer.drain()

    async def _handle(self, reader, writer):
        with self._lock:
            self.connections += 1
            connection = Connection(self.connections)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = [tuple(h.split(":", 1)) for h in header_lines if ":" in h]
                req = Request(method, target, [(k.strip(), v.strip()) for k, v in headers],
                              connection=connection)
                length = int(req.header("content-length") or 0)
                if self._take_rule(req, cut=True) is not None:
                    await reader.readexactly(length // 2)
                    self._record(req)
                    writer.transport.abort()
                    return
                req.body = await reader.readexactly(length)
                if connection.close_on_next_request:
                    # The whole request has been read, so the close below
                    # sends a FIN and not a reset.
                    self._record(req).answered_by = "closed"
                    return
                rule = self._take_rule(req, cut=False)
                record = self._record(req)  # as the engine sent it
                resp = None
                answered_by = "rule"
                try:
                    if rule is not None:
                        resp = await rule.action(self, req)
                    if resp is None:
                        resp = await self.handle_normally(req)
                        answered_by = getattr(resp, "answered_by", "moto")
                except ResetConnection:
                    record.answered_by = "reset"
                    writer.transport.abort()
                    return
                record.status = resp.status
                record.answered_by = answered_by
                if resp.body.startswith(b"<?xml") and b"<Error>" in resp.body:
                    code = resp.body.split(b"<Code>", 1)[-1].split(b"</Code>", 1)[0]
                    record.error_code = code.decode(errors="replace")
                try:
                    await self._send(writer, req, resp)
                except ResetConnection:
                    writer.transport.abort()
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            writer.close()
