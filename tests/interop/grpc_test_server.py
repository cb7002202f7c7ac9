"""A gRPC server on grpclib with Modal's own message classes, for the engine's
transport tests.

Its behaviour is chosen by the request: an app name or sandbox id selects a
scenario (see the handlers).  It prints its URL on the first line of stdout
and appends one JSON line per request to the file given by --record.

    python grpc_test_server.py [--tls-cert F --tls-key F] [--token-secret S]
        [--goaway-after N] [--alpn PROTOCOL] [--max-streams N] [--record FILE]
"""

import argparse
import asyncio
import json
import signal
import ssl
import sys

from grpclib.const import Status
from grpclib.encoding.base import StatusDetailsCodecBase
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError
from grpclib.server import Server
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
import grpclib.protocol
from hyperframe.frame import GoAwayFrame
from google.protobuf import any_pb2
from modal_proto import api_grpc, api_pb2


class ModalStatusDetailsCodec(StatusDetailsCodecBase):
    """Encode error details as Modal's RPCStatus, as its server does."""

    def encode(self, status, message, details):
        status_msg = api_pb2.RPCStatus(code=status.value, message=message or "")
        for detail in details:
            packed = any_pb2.Any(
                type_url="type.googleapis.com/" + detail.DESCRIPTOR.full_name,
                value=detail.SerializeToString(),
            )
            status_msg.details.append(packed)
        return status_msg.SerializeToString()

    def decode(self, status, message, data):
        return api_pb2.RPCStatus.FromString(data)


def _unimplemented(name):
    async def handler(self, stream):
        raise GRPCError(Status.UNIMPLEMENTED, f"{name} is not implemented")

    return handler


# Every RPC that the test server does not define returns UNIMPLEMENTED.
_Base = type(
    "UnimplementedModalClient",
    (api_grpc.ModalClientBase,),
    {name: _unimplemented(name) for name in api_grpc.ModalClientBase.__abstractmethods__},
)


class TestServicer(_Base):
    def __init__(self, args):
        self.args = args
        self.attempts = {}  # idempotency key -> attempts seen
        self.streams_per_connection = {}

    def _attempt(self, stream):
        key = stream.metadata.get("x-idempotency-key", "")
        self.attempts[key] = self.attempts.get(key, 0) + 1
        return self.attempts[key]

    def _maybe_goaway(self, stream):
        """Send GOAWAY once a connection has carried --goaway-after streams.

        The frame is written beside h2's state machine so the streams that
        are already open finish normally, as after a graceful server
        shutdown (RFC 9113 section 6.8)."""
        if not self.args.goaway_after:
            return
        h2_stream = stream._stream
        conn = h2_stream.connection
        count = self.streams_per_connection.get(id(conn), 0) + 1
        self.streams_per_connection[id(conn)] = count
        if count == self.args.goaway_after:
            frame = GoAwayFrame(0, last_stream_id=h2_stream.id, error_code=0)
            h2_stream._transport.write(frame.serialize())

    async def ClientHello(self, stream):
        await stream.recv_message()
        self._maybe_goaway(stream)
        await stream.send_message(api_pb2.ClientHelloResponse())

    async def AppGetOrCreate(self, stream):
        request = await stream.recv_message()
        attempt = self._attempt(stream)
        self._maybe_goaway(stream)
        name = request.app_name
        if name == "missing":
            raise GRPCError(Status.NOT_FOUND, "App 'missing' not found")
        if name == "flaky" and attempt <= 2:
            raise GRPCError(Status.UNAVAILABLE, f"try again (attempt {attempt})")
        if name == "always-unavailable":
            raise GRPCError(Status.UNAVAILABLE, "the service is down")
        if name == "throttled" and attempt == 1:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                "too many requests",
                [api_pb2.RPCRetryPolicy(retry_after_secs=0.5)],
            )
        if name == "quota":
            raise GRPCError(Status.RESOURCE_EXHAUSTED, "GPU quota exceeded")
        if name == "unicode":
            raise GRPCError(Status.FAILED_PRECONDITION, "café 100% ✓")
        if name == "error-after-data":
            await stream.send_message(api_pb2.AppGetOrCreateResponse(app_id="ap-x"))
            raise GRPCError(Status.INTERNAL, "failed after the message")
        if name == "slow":
            await asyncio.sleep(5)
        if name == "pause":
            await asyncio.sleep(1)
        if name == "reset":
            await stream._stream.reset(ErrorCodes.INTERNAL_ERROR)
            return
        if name == "bad-gateway":
            await stream._stream.send_headers(
                [(":status", "502"), ("content-type", "text/html")]
            )
            await stream._stream.send_data(
                b"<html><body>502 Bad Gateway</body></html>", end_stream=True
            )
            return
        if name == "no-status":
            await stream._stream.send_headers(
                [(":status", "200"), ("content-type", "application/grpc")]
            )
            await stream._stream.send_data(b"", end_stream=True)
            return
        if request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
            raise GRPCError(Status.NOT_FOUND, f"App '{name}' not found")
        await stream.send_message(api_pb2.AppGetOrCreateResponse(app_id=f"ap-{name}"))

    async def SecretGetOrCreate(self, stream):
        request = await stream.recv_message()
        size = sum(len(k) + len(v) for k, v in request.env_dict.items())
        await stream.send_message(api_pb2.SecretGetOrCreateResponse(secret_id=f"st-{size}"))

    async def SandboxGetLogs(self, stream):
        request = await stream.recv_message()
        sandbox_id = request.sandbox_id
        if sandbox_id == "many":
            count, item = 10000, lambda n: f"line {n}\n"
        elif sandbox_id == "big":
            count, item = 3, lambda n: chr(ord("a") + n) * (1536 * 1024)
        elif sandbox_id == "cut":
            count, item = 100, lambda n: f"line {n}\n"
        else:
            raise GRPCError(Status.NOT_FOUND, f"Sandbox '{sandbox_id}' not found")
        for n in range(1, count + 1):
            batch = api_pb2.TaskLogsBatch(entry_id=f"{n}-0")
            batch.items.append(
                api_pb2.TaskLogs(data=item(n), file_descriptor=request.file_descriptor)
            )
            await stream.send_message(batch)
        if sandbox_id == "cut":
            await asyncio.sleep(0.2)
            stream._stream._transport.abort()
            return
        await stream.send_message(api_pb2.TaskLogsBatch(entry_id=f"{count}-0", eof=True))


def record_requests(server, path, token_secret):
    async def on_request(event: RecvRequest):
        metadata = dict(event.metadata)
        entry = {
            "method": event.method_name,
            "idempotency_key": metadata.get("x-idempotency-key"),
            "retry_attempt": metadata.get("x-retry-attempt"),
            "throttle_retry_attempt": metadata.get("x-throttle-retry-attempt"),
            "client_type": metadata.get("x-modal-client-type"),
            "client_version": metadata.get("x-modal-client-version"),
            "token_id": metadata.get("x-modal-token-id"),
            "token_secret_matches": metadata.get("x-modal-token-secret") == token_secret,
            # grpclib turns grpc-timeout into a deadline; keep what was left of it
            "deadline_remaining": (event.deadline.time_remaining()
                                   if event.deadline is not None else None),
            "content_type": event.content_type,
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if token_secret and metadata.get("x-modal-token-secret") != token_secret:
            raise GRPCError(Status.UNAUTHENTICATED, "Invalid token secret for token id "
                            f"{metadata.get('x-modal-token-id')}")

    listen(server, RecvRequest, on_request)


def limit_concurrent_streams(limit):
    """Make every new connection announce SETTINGS_MAX_CONCURRENT_STREAMS=limit.

    grpclib offers no setting for it, so the H2Connection class it creates
    is replaced by one that sends the limit with its first SETTINGS."""
    base = grpclib.protocol.H2Connection

    class LimitedH2Connection(base):
        def initiate_connection(self):
            super().initiate_connection()
            self.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: limit})

    grpclib.protocol.H2Connection = LimitedH2Connection


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--token-secret", default="")
    parser.add_argument("--goaway-after", type=int, default=0)
    parser.add_argument("--alpn", default="h2", help="ALPN protocol offered with TLS")
    parser.add_argument("--max-streams", type=int, default=0,
                        help="SETTINGS_MAX_CONCURRENT_STREAMS to announce")
    parser.add_argument("--record", default="/dev/null")
    args = parser.parse_args()

    if args.max_streams:
        limit_concurrent_streams(args.max_streams)
    server = Server([TestServicer(args)], status_details_codec=ModalStatusDetailsCodec())
    record_requests(server, args.record, args.token_secret)
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        context.set_alpn_protocols([args.alpn])
    await server.start("127.0.0.1", 0, ssl=context)
    port = server._server.sockets[0].getsockname()[1]
    scheme = "https" if context else "http"
    print(f"{scheme}://127.0.0.1:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
