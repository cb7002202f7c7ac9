"""Sandbox RPCs: create, logs, wait, terminate, task id, list, lookup by name, stdin."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import TYPE_CHECKING, Dict, List, Optional

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from .calls import Call
from .ids import new_id
from .logstore import LogEntry, parse_entry_id
from .resources import ResourceError, gpu_string, resource_environment, resources_json
from .rpc import check_seconds, invalid_argument, require, rpc
from .sandboxes import DEFAULT_TIMEOUT_SECS, LaunchSpec, Sandbox
from .secretstore import Secret
from .streaming import run_stream

if TYPE_CHECKING:
    from .server import Emulator

log = logging.getLogger(__name__)

# NOTE: 24 hours as Modal's longest sandbox lifetime is taken from its docs as summarized
# for this project; Modal's server may enforce it with a different status or message.
MAX_TIMEOUT_SECS = 24 * 3600
# Used when neither the request nor the image names a command: wait until the timeout ends it.
IDLE_COMMAND = ["sleep", "2147483647"]


def _get_sandbox(emulator: "Emulator", sandbox_id: str) -> Sandbox:
    require(sandbox_id, "sandbox_id")
    sandbox = emulator.sandboxes.get(sandbox_id)
    if sandbox is None:
        raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
    return sandbox


def _handle_metadata(sandbox: Sandbox) -> api_pb2.SandboxHandleMetadata:
    metadata = api_pb2.SandboxHandleMetadata(app_id=sandbox.app_id)
    if sandbox.result is not None:
        metadata.result.CopyFrom(sandbox.result)
    return metadata


@rpc("SandboxCreate")
async def sandbox_create(emulator: "Emulator", request: api_pb2.SandboxCreateRequest,
                         call: Call) -> api_pb2.SandboxCreateResponse:
    """Create and start a sandbox; a repeated x-idempotency-key returns the first sandbox."""
    pending_creates = emulator.sandboxes.idempotency
    key = call.idempotency_key
    future: Optional[asyncio.Future] = None
    while key:
        pending = pending_creates.get(key)
        if pending is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            pending_creates[key] = future
            break
        try:
            sandbox = await asyncio.shield(pending)
        except asyncio.CancelledError:
            if pending.cancelled():
                continue  # the first attempt was cancelled before it created anything; create now
            raise
        log.info("SandboxCreate: idempotency key %s repeats, returning %s", key, sandbox.id)
        return api_pb2.SandboxCreateResponse(sandbox_id=sandbox.id, metadata=_handle_metadata(sandbox))

    try:
        sandbox = await _create_sandbox(emulator, request, key)
    except BaseException as exc:
        if future is not None:
            del pending_creates[key]
            if isinstance(exc, Exception):
                future.set_exception(exc)
            else:
                future.cancel()
        raise
    if future is not None:
        future.set_result(sandbox)
    return api_pb2.SandboxCreateResponse(sandbox_id=sandbox.id, metadata=_handle_metadata(sandbox))


async def _create_sandbox(emulator: "Emulator", request: api_pb2.SandboxCreateRequest,
                          idempotency_key: Optional[str]) -> Sandbox:
    app_id = require(request.app_id, "app_id")
    app = emulator.catalog.apps.get(app_id)
    if app is None:
        raise GRPCError(Status.NOT_FOUND, f"App {app_id} not found")
    if not request.HasField("definition"):
        raise GRPCError(Status.INVALID_ARGUMENT, "missing definition")
    definition = request.definition

    try:
        gpu = gpu_string(definition.resources.gpu_config)
    except ResourceError as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
    timeout = definition.timeout_secs or DEFAULT_TIMEOUT_SECS
    if timeout > MAX_TIMEOUT_SECS:
        raise invalid_argument("definition.timeout_secs",
                               f"{timeout} is above the maximum of {MAX_TIMEOUT_SECS} (24 hours)")
    workdir = definition.workdir if definition.HasField("workdir") else None
    if workdir is not None and not os.path.isabs(workdir):
        raise invalid_argument("definition.workdir", f'"{workdir}" is not an absolute path')

    image_id = require(definition.image_id, "definition.image_id")
    image = emulator.images.get(image_id)
    if image is None:
        raise GRPCError(Status.NOT_FOUND, f"Image {image_id} not found")
    if image.status != "success":
        raise GRPCError(Status.FAILED_PRECONDITION, f"Image {image_id} has not been built successfully "
                                                    f"(build status: {image.status})")
    secrets: List[Secret] = []
    for secret_id in definition.secret_ids:
        secret = emulator.secrets.get(secret_id)
        if secret is None:
            raise GRPCError(Status.NOT_FOUND, f"Secret {secret_id} not found")
        secrets.append(secret)

    name = definition.name if definition.HasField("name") else ""
    if name:
        running = emulator.sandboxes.find_running(app_id, name)
        if running is not None:
            raise GRPCError(Status.ALREADY_EXISTS,
                            f"Sandbox named '{name}' already exists in app {app_id} and is still running")

    for index, argument in enumerate(definition.entrypoint_args):
        if "\0" in argument:
            raise invalid_argument("definition.entrypoint_args", f"argument {index} contains a NUL byte")

    image_chain = emulator.images.chain(image_id)
    argv = list(definition.entrypoint_args) or _image_command(image_chain)
    sandbox_id = new_id("sb")
    task_id = new_id("ta")
    sandbox_dir = os.path.join(emulator.state_dir, "sandboxes", sandbox_id)
    home = os.path.join(sandbox_dir, "home")
    tmpdir = os.path.join(sandbox_dir, "tmp")
    os.makedirs(home)
    os.makedirs(tmpdir)

    env = emulator.base_environment(home, tmpdir)
    env_keys: List[str] = []
    for secret in secrets:
        env.update(secret.env)
        env_keys.extend(secret.env)
    extra_env = dict(definition.environment_variables.contents)
    env.update(extra_env)
    env_keys.extend(extra_env)
    env.update(resource_environment(definition.resources, gpu))
    env["MODAL_SANDBOX_ID"] = sandbox_id
    env["MODAL_TASK_ID"] = task_id

    tags = {tag.tag_name: tag.tag_value for tag in request.tags}
    recorded = {
        "entrypoint_args": list(definition.entrypoint_args),
        "argv": argv,
        "image_id": image_id,
        "image": image_chain,
        "secret_ids": list(definition.secret_ids),
        "secret_names": [secret.name for secret in secrets],
        "env_keys": list(dict.fromkeys(env_keys)),
        "resources": resources_json(definition.resources, gpu),
        "timeout_secs": definition.timeout_secs,
        "effective_timeout_secs": timeout,
        "idle_timeout_secs": definition.idle_timeout_secs if definition.HasField("idle_timeout_secs") else None,
        "workdir": workdir,
        "name": name,
        "tags": tags,
        "pty": definition.pty_info.enabled,
        "cloud": definition.cloud_provider_str,
        "regions": list(definition.scheduler_placement.regions),
    }
    spec = LaunchSpec(argv=argv, env=env, cwd=workdir or home, home=home, timeout_secs=timeout,
                      merge_stderr=definition.pty_info.enabled)
    sandbox = Sandbox(sandbox_id, task_id, app_id, name, tags, recorded, spec,
                      emulator.sandboxes.next_created_at(), idempotency_key)
    await emulator.sandboxes.launch(sandbox)
    emulator.changed()
    return sandbox


def _image_command(image_chain: List[Dict]) -> List[str]:
    """Return the last CMD of the image's layers, or IDLE_COMMAND when there is none."""
    for layer in reversed(image_chain):
        for command in reversed(layer["dockerfile_commands"]):
            if not command.upper().startswith("CMD "):
                continue
            argument = command[4:].strip()
            try:
                argv = json.loads(argument)
            except json.JSONDecodeError:
                return ["/bin/sh", "-c", argument]
            if isinstance(argv, list) and argv and all(isinstance(item, str) for item in argv):
                return argv
    return list(IDLE_COMMAND)


@rpc("SandboxGetLogs", streaming=True)
async def sandbox_get_logs(emulator: "Emulator", request: api_pb2.SandboxGetLogsRequest, call: Call) -> None:
    sandbox = _get_sandbox(emulator, request.sandbox_id)
    fd = request.file_descriptor
    if fd not in (api_pb2.FILE_DESCRIPTOR_STDOUT, api_pb2.FILE_DESCRIPTOR_STDERR):
        raise invalid_argument("file_descriptor", f"{fd}: expected 1 (stdout) or 2 (stderr)")
    timeout = check_seconds(request.timeout, "timeout")
    try:
        cursor = parse_entry_id(request.last_entry_id)
    except ValueError as exc:
        raise invalid_argument("last_entry_id", str(exc)) from None
    plan = emulator.faults.plan_stream(call.method, fd)

    def make_batch(entries: List[LogEntry], entry_id: str, eof: bool) -> api_pb2.TaskLogsBatch:
        items = [api_pb2.TaskLogs(data=entry.data, timestamp=entry.timestamp, file_descriptor=fd,
                                  task_state=api_pb2.TASK_STATE_ACTIVE) for entry in entries]
        return api_pb2.TaskLogsBatch(task_id=sandbox.task_id, sandbox_id=sandbox.id, items=items,
                                     entry_id=entry_id, eof=eof)

    def final_message(entry_id: str) -> api_pb2.TaskLogsBatch:
        return make_batch([], entry_id, True)

    await run_stream(call, sandbox.log_stream(fd), cursor, timeout, plan, make_batch, final_message)


@rpc("SandboxWait")
async def sandbox_wait(emulator: "Emulator", request: api_pb2.SandboxWaitRequest,
                       call: Call) -> api_pb2.SandboxWaitResponse:
    sandbox = _get_sandbox(emulator, request.sandbox_id)
    timeout = check_seconds(request.timeout, "timeout")
    if not sandbox.finished and timeout > 0:
        try:
            await asyncio.wait_for(asyncio.shield(sandbox.finished_event.wait()), timeout)
        except asyncio.TimeoutError:
            pass
    # While the sandbox runs, the reply must not contain a result at all: clients test its presence.
    response = api_pb2.SandboxWaitResponse(metadata=_handle_metadata(sandbox))
    if sandbox.result is not None:
        response.result.CopyFrom(sandbox.result)
    return response


@rpc("SandboxTerminate")
async def sandbox_terminate(emulator: "Emulator", request: api_pb2.SandboxTerminateRequest,
                            call: Call) -> api_pb2.SandboxTerminateResponse:
    sandbox = _get_sandbox(emulator, request.sandbox_id)
    existing = await emulator.sandboxes.terminate(sandbox)
    response = api_pb2.SandboxTerminateResponse()
    if existing is not None:
        response.existing_result.CopyFrom(existing)
    return response


@rpc("SandboxGetTaskId")
async def sandbox_get_task_id(emulator: "Emulator", request: api_pb2.SandboxGetTaskIdRequest,
                              call: Call) -> api_pb2.SandboxGetTaskIdResponse:
    sandbox = _get_sandbox(emulator, request.sandbox_id)
    if request.HasField("timeout"):
        check_seconds(request.timeout, "timeout")
    # The emulator starts the process inside SandboxCreate, so the task exists at once.
    response = api_pb2.SandboxGetTaskIdResponse(task_id=sandbox.task_id)
    if sandbox.result is not None:
        response.task_result.CopyFrom(sandbox.result)
    return response


def _sandbox_info(emulator: "Emulator", sandbox: Sandbox) -> api_pb2.SandboxInfo:
    task_info = api_pb2.TaskInfo(id=sandbox.task_id, sandbox_id=sandbox.id, enqueued_at=sandbox.created_at,
                                 started_at=sandbox.started_at or 0.0, finished_at=sandbox.finished_at or 0.0,
                                 gpu_type=sandbox.definition["resources"]["gpu"])
    if sandbox.result is not None:
        task_info.result.CopyFrom(sandbox.result)
    return api_pb2.SandboxInfo(
        id=sandbox.id, created_at=sandbox.created_at, app_id=sandbox.app_id, name=sandbox.name,
        image_id=sandbox.definition["image_id"], timeout_secs=sandbox.spec.timeout_secs,
        tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in sandbox.tags.items()],
        task_info=task_info, metadata=_handle_metadata(sandbox),
    )


@rpc("SandboxList")
async def sandbox_list(emulator: "Emulator", request: api_pb2.SandboxListRequest,
                       call: Call) -> api_pb2.SandboxListResponse:
    """List sandboxes newest first, one page at a time; the next page starts before the last created_at."""
    environment = emulator.catalog.resolve_environment_name(request.environment_name)
    required_tags = {tag.tag_name: tag.tag_value for tag in request.tags}
    matches = []
    for sandbox in emulator.sandboxes.sandboxes.values():
        if request.app_id and sandbox.app_id != request.app_id:
            continue
        app = emulator.catalog.apps.get(sandbox.app_id)
        if not request.app_id and (app is None or app.environment != environment):
            continue
        if sandbox.finished and not request.include_finished:
            continue
        if request.before_timestamp and sandbox.created_at >= request.before_timestamp:
            continue
        if any(sandbox.tags.get(name) != value for name, value in required_tags.items()):
            continue
        matches.append(sandbox)
    matches.sort(key=lambda sandbox: sandbox.created_at, reverse=True)
    page = matches[: emulator.config.list_page_size]
    return api_pb2.SandboxListResponse(sandboxes=[_sandbox_info(emulator, sandbox) for sandbox in page])


@rpc("SandboxGetFromName")
async def sandbox_get_from_name(emulator: "Emulator", request: api_pb2.SandboxGetFromNameRequest,
                                call: Call) -> api_pb2.SandboxGetFromNameResponse:
    name = require(request.sandbox_name, "sandbox_name")
    app_name = require(request.app_name, "app_name")
    app = emulator.catalog.find_app(request.environment_name, app_name)
    if app is None:
        raise GRPCError(Status.NOT_FOUND, f"App '{app_name}' not found")
    sandbox = emulator.sandboxes.find_running(app.id, name)
    if sandbox is None and request.include_terminated:
        named = [s for s in emulator.sandboxes.sandboxes.values() if s.app_id == app.id and s.name == name]
        sandbox = named[-1] if named else None
    if sandbox is None:
        raise GRPCError(Status.NOT_FOUND, f"Sandbox '{name}' not found in app '{app_name}'")
    return api_pb2.SandboxGetFromNameResponse(sandbox_id=sandbox.id, metadata=_handle_metadata(sandbox))


@rpc("SandboxStdinWrite")
async def sandbox_stdin_write(emulator: "Emulator", request: api_pb2.SandboxStdinWriteRequest,
                              call: Call) -> api_pb2.SandboxStdinWriteResponse:
    sandbox = _get_sandbox(emulator, request.sandbox_id)
    if request.index < 1:
        raise invalid_argument("index", f"{request.index}: writes are numbered from 1")
    if sandbox.finished:
        raise GRPCError(Status.FAILED_PRECONDITION, f"Sandbox {sandbox.id} has finished; its stdin is closed")
    if sandbox.stdin_closed and request.index > sandbox.stdin_index:
        raise GRPCError(Status.FAILED_PRECONDITION, f"stdin of sandbox {sandbox.id} was already closed with eof")
    await emulator.sandboxes.write_stdin(sandbox, request.input, request.index, request.eof)
    return api_pb2.SandboxStdinWriteResponse()
