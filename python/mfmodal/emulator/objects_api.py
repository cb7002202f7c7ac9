"""RPCs for the objects a sandbox depends on: apps, environments, secrets, images."""

from __future__ import annotations

from typing import TYPE_CHECKING

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from .calls import Call
from .images import describe_image, image_key, image_metadata
from .logstore import LogEntry, parse_entry_id
from .rpc import check_seconds, invalid_argument, require, rpc
from .secretstore import SecretStore, validate_env_key
from .streaming import run_stream

if TYPE_CHECKING:
    from .server import Emulator

CreationType = api_pb2.ObjectCreationType


def _creation_type_name(value: int) -> str:
    try:
        return api_pb2.ObjectCreationType.Name(value)
    except ValueError:
        return str(value)


def _unsupported_creation_type(value: int) -> GRPCError:
    return invalid_argument("object_creation_type", f"{_creation_type_name(value)} is not supported here")


@rpc("ClientHello")
async def client_hello(emulator: "Emulator", request: object, call: Call) -> api_pb2.ClientHelloResponse:
    return api_pb2.ClientHelloResponse()


@rpc("EnvironmentGetOrCreate")
async def environment_get_or_create(emulator: "Emulator", request: api_pb2.EnvironmentGetOrCreateRequest,
                                    call: Call) -> api_pb2.EnvironmentGetOrCreateResponse:
    environment = emulator.catalog.environment(request.deployment_name)
    if environment is None:
        if request.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
            environment = emulator.catalog.create_environment(request.deployment_name)
            emulator.changed()
        elif request.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
            raise GRPCError(Status.NOT_FOUND, f"Environment '{request.deployment_name}' not found")
        else:
            raise _unsupported_creation_type(request.object_creation_type)
    settings = api_pb2.EnvironmentSettings(image_builder_version=emulator.config.image_builder_version)
    return api_pb2.EnvironmentGetOrCreateResponse(
        environment_id=environment.id,
        metadata=api_pb2.EnvironmentMetadata(name=environment.name, settings=settings),
    )


@rpc("AppGetOrCreate")
async def app_get_or_create(emulator: "Emulator", request: api_pb2.AppGetOrCreateRequest,
                            call: Call) -> api_pb2.AppGetOrCreateResponse:
    name = require(request.app_name, "app_name")
    environment = emulator.catalog.environment(request.environment_name)
    if environment is None:
        raise GRPCError(Status.NOT_FOUND, f"Environment '{request.environment_name}' not found")
    creation_type = request.object_creation_type
    if creation_type not in (api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED, api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
                             api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS):
        raise _unsupported_creation_type(creation_type)

    app = emulator.catalog.find_app(environment.name, name)
    if app is not None and creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
        raise GRPCError(Status.ALREADY_EXISTS, f"App '{name}' already exists in environment '{environment.name}'")
    if app is None:
        if creation_type == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
            raise GRPCError(Status.NOT_FOUND, f"App '{name}' not found in environment '{environment.name}'")
        app = emulator.catalog.create_app(environment.name, name)
        emulator.changed()
    return api_pb2.AppGetOrCreateResponse(
        app_id=app.id,
        handle_metadata=api_pb2.AppHandleMetadata(app_id=app.id, environment_name=environment.name,
                                                  description=app.name),
    )


@rpc("SecretGetOrCreate")
async def secret_get_or_create(emulator: "Emulator", request: api_pb2.SecretGetOrCreateRequest,
                               call: Call) -> api_pb2.SecretGetOrCreateResponse:
    store: SecretStore = emulator.secrets
    # Protobuf maps have no order; sorting keeps the state dump the same from run to run.
    env = dict(sorted(request.env_dict.items()))
    for key, value in env.items():
        problem = validate_env_key(key)
        if problem:
            raise invalid_argument("env_dict", problem)
        if "\0" in value:
            raise invalid_argument("env_dict", f'the value of "{key}" contains a NUL byte')
    creation_type = request.object_creation_type

    if creation_type in (api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP, api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL):
        if creation_type == api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP:
            require(request.app_id, "app_id (required with OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP)")
            if request.app_id not in emulator.catalog.apps:
                raise GRPCError(Status.NOT_FOUND, f"App {request.app_id} not found")
        kind = "anonymous" if creation_type == api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP else "ephemeral"
        secret = store.add_anonymous(env, kind, request.app_id)
    else:
        name = require(request.deployment_name, "deployment_name")
        if emulator.catalog.environment(request.environment_name) is None:
            raise GRPCError(Status.NOT_FOUND, f"Environment '{request.environment_name}' not found")
        existing = store.by_name(name)
        if creation_type == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
            if existing is None:
                raise GRPCError(Status.NOT_FOUND, f"Secret '{name}' not found")
            secret = existing
        elif creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
            secret = existing or store.put_named(name, env)
        elif creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
            if existing is not None:
                raise GRPCError(Status.ALREADY_EXISTS, f"Secret '{name}' already exists")
            secret = store.put_named(name, env)
        elif creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS:
            secret = store.put_named(name, env)
        else:
            raise _unsupported_creation_type(creation_type)

    missing = store.missing_keys(secret, list(request.required_keys))
    if missing:
        label = f"'{secret.name}'" if secret.name else secret.id
        raise GRPCError(Status.NOT_FOUND, f"Secret {label} is missing required key(s): {', '.join(missing)}")
    emulator.changed()
    return api_pb2.SecretGetOrCreateResponse(
        secret_id=secret.id,
        metadata=api_pb2.SecretMetadata(
            name=secret.name or "",
            creation_info=api_pb2.CreationInfo(created_at=secret.created_at, created_by="mfmodal-emulator"),
            environment_name=emulator.catalog.resolve_environment_name(request.environment_name),
        ),
    )


@rpc("ImageGetOrCreate")
async def image_get_or_create(emulator: "Emulator", request: api_pb2.ImageGetOrCreateRequest,
                              call: Call) -> api_pb2.ImageGetOrCreateResponse:
    if not request.HasField("image"):
        raise GRPCError(Status.INVALID_ARGUMENT, "missing image")
    image = request.image
    if not image.dockerfile_commands and not image.base_images and not image.HasField("build_function"):
        raise invalid_argument("image", "no dockerfile_commands, base_images or build_function")
    for base in image.base_images:
        if emulator.images.get(base.image_id) is None:
            raise GRPCError(Status.NOT_FOUND, f"base image {base.image_id!r} ({base.docker_tag}) not found")
    for secret_id in image.secret_ids:
        if emulator.secrets.get(secret_id) is None:
            raise GRPCError(Status.NOT_FOUND, f"Secret {secret_id} not found")
    if request.app_id and request.app_id not in emulator.catalog.apps:
        raise GRPCError(Status.NOT_FOUND, f"App {request.app_id} not found")

    builder_version = request.builder_version or emulator.config.image_builder_version
    key = image_key(request, builder_version)
    record = emulator.images.find(key)
    reuse = record is not None and (record.status == "building" or
                                    (record.status == "success" and not request.force_build))
    if not reuse:
        plan = emulator.faults.plan_image_build("\n".join(image.dockerfile_commands))
        record = emulator.images.build(record, key, describe_image(request), builder_version, plan)
    assert record is not None

    response = api_pb2.ImageGetOrCreateResponse(image_id=record.id)
    if record.finished and record.result is not None:
        response.result.CopyFrom(record.result)
        if record.status == "success":
            response.metadata.CopyFrom(image_metadata(record.builder_version))
    return response


@rpc("ImageJoinStreaming", streaming=True)
async def image_join_streaming(emulator: "Emulator", request: api_pb2.ImageJoinStreamingRequest,
                               call: Call) -> None:
    image_id = require(request.image_id, "image_id")
    record = emulator.images.get(image_id)
    if record is None:
        raise GRPCError(Status.NOT_FOUND, f"Image {image_id} not found")
    timeout = check_seconds(request.timeout, "timeout")
    try:
        cursor = parse_entry_id(request.last_entry_id)
    except ValueError as exc:
        raise invalid_argument("last_entry_id", str(exc)) from None
    if record.finished and not request.include_logs_for_finished and cursor == 0:
        cursor = record.logs.last_seq
    plan = emulator.faults.plan_stream(call.method, api_pb2.FILE_DESCRIPTOR_STDOUT)

    def make_batch(entries: list, entry_id: str, eof: bool) -> api_pb2.ImageJoinStreamingResponse:
        return api_pb2.ImageJoinStreamingResponse(task_logs=[_task_log(entry) for entry in entries],
                                                  entry_id=entry_id, eof=eof)

    def final_message(entry_id: str) -> api_pb2.ImageJoinStreamingResponse:
        response = api_pb2.ImageJoinStreamingResponse(entry_id=entry_id, eof=True)
        if record.result is not None:
            response.result.CopyFrom(record.result)
            if record.status == "success":
                response.metadata.CopyFrom(image_metadata(record.builder_version))
        return response

    await run_stream(call, record.logs, cursor, timeout, plan, make_batch, final_message)


def _task_log(entry: LogEntry) -> api_pb2.TaskLogs:
    return api_pb2.TaskLogs(data=entry.data, timestamp=entry.timestamp,
                            file_descriptor=api_pb2.FILE_DESCRIPTOR_STDOUT)
