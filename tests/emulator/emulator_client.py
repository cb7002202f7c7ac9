"""A raw grpclib client for the emulator, built on Modal's own message classes."""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Sequence, Tuple

from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from modal._utils.grpc_utils import CustomProtoStatusDetailsCodec
from modal_proto import api_grpc, api_pb2

TOKEN_ID = "ak-test"
TOKEN_SECRET = "as-test"


def run(coroutine: Any) -> Any:
    """Run a coroutine to completion in a fresh event loop (the tests are synchronous)."""
    return asyncio.run(coroutine)


class Client:
    """One HTTP/2 connection to the emulator with token metadata on every call."""

    def __init__(self, url: str, *, token_id: str = TOKEN_ID, token_secret: str = TOKEN_SECRET,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        parsed = urllib.parse.urlparse(url)
        self.channel = Channel(parsed.hostname, parsed.port, ssl=ssl_context,
                               status_details_codec=CustomProtoStatusDetailsCodec())
        self.stub = api_grpc.ModalClientStub(self.channel)
        self.metadata: Dict[str, str] = {}
        if token_id:
            self.metadata["x-modal-token-id"] = token_id
        if token_secret:
            self.metadata["x-modal-token-secret"] = token_secret

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.channel.close()

    def md(self, **extra: str) -> Dict[str, str]:
        return {**self.metadata, **{key.replace("_", "-"): value for key, value in extra.items()}}

    async def call(self, method: str, request: Any, *, metadata: Optional[Dict[str, str]] = None,
                   timeout: Optional[float] = 30) -> Any:
        return await getattr(self.stub, method)(request, metadata=metadata or self.metadata, timeout=timeout)

    async def app(self, name: str = "tests") -> str:
        response = await self.call("AppGetOrCreate", api_pb2.AppGetOrCreateRequest(
            app_name=name, object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING))
        return response.app_id

    async def image(self, app_id: str, commands: Sequence[str] = ("FROM python:3.11-slim",)) -> str:
        response = await self.call("ImageGetOrCreate", api_pb2.ImageGetOrCreateRequest(
            app_id=app_id, image=api_pb2.Image(dockerfile_commands=list(commands))))
        return response.image_id

    async def env_secret(self, app_id: str, env: Dict[str, str]) -> str:
        response = await self.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(
            app_id=app_id, env_dict=env, object_creation_type=api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP))
        return response.secret_id

    async def sandbox(self, *argv: str, app_id: Optional[str] = None, image_id: Optional[str] = None,
                      metadata: Optional[Dict[str, str]] = None, tags: Optional[Dict[str, str]] = None,
                      **definition: Any) -> str:
        """Create a sandbox running ``argv``; keyword arguments go into the Sandbox definition."""
        app_id = app_id or await self.app()
        image_id = image_id or await self.image(app_id)
        definition.setdefault("timeout_secs", 60)
        request = api_pb2.SandboxCreateRequest(
            app_id=app_id,
            definition=api_pb2.Sandbox(entrypoint_args=list(argv), image_id=image_id, **definition),
            tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in (tags or {}).items()],
        )
        response = await self.call("SandboxCreate", request, metadata=metadata)
        return response.sandbox_id

    async def wait(self, sandbox_id: str, timeout: float = 10.0) -> api_pb2.SandboxWaitResponse:
        return await self.call("SandboxWait", api_pb2.SandboxWaitRequest(sandbox_id=sandbox_id, timeout=timeout),
                               timeout=timeout + 10)

    async def wait_finished(self, sandbox_id: str, deadline: float = 20.0) -> api_pb2.GenericResult:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            response = await self.wait(sandbox_id, timeout=min(5.0, max(end - time.monotonic(), 0.1)))
            if response.HasField("result"):
                return response.result
        raise AssertionError(f"sandbox {sandbox_id} did not finish within {deadline} s")

    async def log_batches(self, sandbox_id: str, fd: int = 1, last_entry_id: str = "", timeout: float = 10.0,
                          deadline: float = 30.0) -> Tuple[List[api_pb2.TaskLogsBatch], Any]:
        """Run one SandboxGetLogs call; return its batches and the final status (None for OK)."""
        request = api_pb2.SandboxGetLogsRequest(sandbox_id=sandbox_id, file_descriptor=fd, timeout=timeout,
                                                last_entry_id=last_entry_id)
        batches: List[api_pb2.TaskLogsBatch] = []
        try:
            async with self.stub.SandboxGetLogs.open(metadata=self.metadata, timeout=deadline) as stream:
                await stream.send_message(request, end=True)
                async for batch in stream:
                    batches.append(batch)
        except GRPCError as exc:
            return batches, exc
        return batches, None

    async def read_all_logs(self, sandbox_id: str, fd: int = 1, deadline: float = 30.0) -> Tuple[str, List[str]]:
        """Follow a log stream to eof across reconnects; return the text and the entry ids seen."""
        cursor = ""
        text = []
        ids: List[str] = []
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            batches, error = await self.log_batches(sandbox_id, fd, cursor, timeout=5.0)
            if error is not None:
                raise error
            for batch in batches:
                cursor = batch.entry_id
                text.extend(item.data for item in batch.items)
                if batch.items:
                    ids.append(batch.entry_id)
                if batch.eof:
                    return "".join(text), ids
        raise AssertionError(f"no eof on fd {fd} of {sandbox_id} within {deadline} s")


def entry_number(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def process_exited(pid: int) -> bool:
    """Return True when ``pid`` no longer runs (a zombie waiting for its reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_exited(pid: int, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process_exited(pid):
            return True
        time.sleep(0.05)
    return process_exited(pid)
