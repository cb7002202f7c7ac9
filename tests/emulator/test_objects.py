"""Apps, environments, secrets and images through a raw grpclib client."""

from __future__ import annotations

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from emulator_client import Client, run

CREATE_IF_MISSING = api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING


async def status_of(awaitable) -> object:
    try:
        return await awaitable
    except GRPCError as exc:
        return exc


def test_app_get_or_create(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            lookup = api_pb2.AppGetOrCreateRequest(app_name="apps-test")
            missing = await status_of(client.call("AppGetOrCreate", lookup))
            created = await client.call("AppGetOrCreate", api_pb2.AppGetOrCreateRequest(
                app_name="apps-test", object_creation_type=CREATE_IF_MISSING))
            found = await client.call("AppGetOrCreate", lookup)
            exists = await status_of(client.call("AppGetOrCreate", api_pb2.AppGetOrCreateRequest(
                app_name="apps-test", object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS)))
            no_name = await status_of(client.call("AppGetOrCreate", api_pb2.AppGetOrCreateRequest()))
            bad_env = await status_of(client.call("AppGetOrCreate", api_pb2.AppGetOrCreateRequest(
                app_name="apps-test", environment_name="staging", object_creation_type=CREATE_IF_MISSING)))
            return missing, created, found, exists, no_name, bad_env

    missing, created, found, exists, no_name, bad_env = run(scenario())
    assert missing.status == Status.NOT_FOUND
    assert "apps-test" in missing.message
    assert created.app_id.startswith("ap-")
    assert found.app_id == created.app_id
    assert created.handle_metadata.environment_name == "main"
    assert exists.status == Status.ALREADY_EXISTS
    assert no_name.status == Status.INVALID_ARGUMENT
    assert "app_name" in no_name.message
    assert bad_env.status == Status.NOT_FOUND
    assert "staging" in bad_env.message
    assert emulator.state()["apps"][created.app_id]["name"] == "apps-test"


def test_environment_get_or_create(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            default = await client.call("EnvironmentGetOrCreate", api_pb2.EnvironmentGetOrCreateRequest())
            main = await client.call("EnvironmentGetOrCreate",
                                     api_pb2.EnvironmentGetOrCreateRequest(deployment_name="main"))
            missing = await status_of(client.call("EnvironmentGetOrCreate",
                                                  api_pb2.EnvironmentGetOrCreateRequest(deployment_name="dev")))
            created = await client.call("EnvironmentGetOrCreate", api_pb2.EnvironmentGetOrCreateRequest(
                deployment_name="dev", object_creation_type=CREATE_IF_MISSING))
            return default, main, missing, created

    default, main, missing, created = run(scenario())
    assert default.environment_id.startswith("en-")
    assert default.environment_id == main.environment_id
    assert default.metadata.name == "main"
    assert default.metadata.settings.image_builder_version == "2025.06"
    assert missing.status == Status.NOT_FOUND
    assert created.metadata.name == "dev"


def test_secret_lookup_and_required_keys(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            found = await client.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(
                deployment_name="hf-token", required_keys=["HF_TOKEN"]))
            again = await client.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(
                deployment_name="hf-token"))
            missing_key = await status_of(client.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(
                deployment_name="hf-token", required_keys=["HF_TOKEN", "WANDB_KEY"])))
            missing = await status_of(client.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(
                deployment_name="no-such-secret")))
            return found, again, missing_key, missing

    found, again, missing_key, missing = run(scenario())
    assert found.secret_id.startswith("st-")
    assert found.secret_id == again.secret_id
    assert found.metadata.name == "hf-token"
    assert missing_key.status == Status.NOT_FOUND
    assert "WANDB_KEY" in missing_key.message
    assert "HF_TOKEN" not in missing_key.message
    assert missing.status == Status.NOT_FOUND
    assert "no-such-secret" in missing.message


def test_secret_env_dict_creates_new_ids(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            anonymous = [await client.env_secret(app_id, {"A": "1"}) for _ in range(2)]
            ephemeral = await client.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(
                env_dict={"B": "2"}, object_creation_type=api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL))
            no_app = await status_of(client.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(
                env_dict={"A": "1"}, object_creation_type=api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP)))
            bad_key = await status_of(client.env_secret(app_id, {"A=B": "1"}))
            return anonymous, ephemeral, no_app, bad_key

    anonymous, ephemeral, no_app, bad_key = run(scenario())
    assert len(set(anonymous)) == 2
    assert ephemeral.secret_id not in anonymous
    secrets = emulator.state()["secrets"]
    assert secrets[anonymous[0]]["kind"] == "anonymous"
    assert secrets[anonymous[0]]["keys"] == ["A"]
    assert secrets[ephemeral.secret_id]["kind"] == "ephemeral"
    assert no_app.status == Status.INVALID_ARGUMENT
    assert "app_id" in no_app.message
    assert bad_key.status == Status.INVALID_ARGUMENT
    assert "A=B" in bad_key.message


def test_secret_named_creation_types(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            def request(creation_type, env):
                return api_pb2.SecretGetOrCreateRequest(deployment_name="made-here", env_dict=env,
                                                        object_creation_type=creation_type)
            created = await client.call("SecretGetOrCreate", request(
                api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS, {"K": "1"}))
            duplicate = await status_of(client.call("SecretGetOrCreate", request(
                api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS, {"K": "2"})))
            overwritten = await client.call("SecretGetOrCreate", request(
                api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS, {"K": "3", "L": "4"}))
            return created, duplicate, overwritten

    created, duplicate, overwritten = run(scenario())
    assert duplicate.status == Status.ALREADY_EXISTS
    assert overwritten.secret_id == created.secret_id
    assert emulator.state()["secrets"][created.secret_id]["keys"] == ["K", "L"]


def test_image_get_or_create_records_and_caches(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            request = api_pb2.ImageGetOrCreateRequest(app_id=app_id, image=api_pb2.Image(
                dockerfile_commands=["FROM nvcr.io/nvidia/pytorch:24.01-py3"], build_args={"X": "1"}))
            first = await client.call("ImageGetOrCreate", request)
            second = await client.call("ImageGetOrCreate", request)
            layer = await client.call("ImageGetOrCreate", api_pb2.ImageGetOrCreateRequest(
                app_id=app_id, image=api_pb2.Image(
                    base_images=[api_pb2.BaseImage(docker_tag="base", image_id=first.image_id)],
                    dockerfile_commands=["FROM base", "RUN pip install torch"])))
            empty = await status_of(client.call("ImageGetOrCreate", api_pb2.ImageGetOrCreateRequest(
                app_id=app_id, image=api_pb2.Image())))
            bad_base = await status_of(client.call("ImageGetOrCreate", api_pb2.ImageGetOrCreateRequest(
                app_id=app_id, image=api_pb2.Image(base_images=[api_pb2.BaseImage(image_id="im-nope")],
                                                   dockerfile_commands=["FROM base"]))))
            sandbox_id = await client.sandbox("true", app_id=app_id, image_id=layer.image_id)
            return first, second, layer, empty, bad_base, sandbox_id

    first, second, layer, empty, bad_base, sandbox_id = run(scenario())
    assert first.image_id.startswith("im-")
    assert first.result.status == api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
    assert first.metadata.image_builder_version == "2025.06"
    assert second.image_id == first.image_id
    state = emulator.state()
    assert state["images"][first.image_id]["builds"] == 1
    assert state["images"][first.image_id]["definition"]["registry_tag"] == "nvcr.io/nvidia/pytorch:24.01-py3"
    assert state["images"][first.image_id]["definition"]["build_args"] == {"X": "1"}
    chain = state["sandboxes"][sandbox_id]["definition"]["image"]
    assert [layer_record["image_id"] for layer_record in chain] == [first.image_id, layer.image_id]
    assert chain[1]["dockerfile_commands"] == ["FROM base", "RUN pip install torch"]
    assert empty.status == Status.INVALID_ARGUMENT
    assert bad_base.status == Status.NOT_FOUND
    assert "im-nope" in bad_base.message


def test_image_join_streaming_for_finished_build(emulator):
    async def scenario():
        async with Client(emulator.url) as client:
            app_id = await client.app()
            image_id = await client.image(app_id, ["FROM alpine:3.20"])
            responses = await client.call("ImageJoinStreaming", api_pb2.ImageJoinStreamingRequest(
                image_id=image_id, timeout=5))
            unknown = await status_of(client.call("ImageJoinStreaming", api_pb2.ImageJoinStreamingRequest(
                image_id="im-unknown", timeout=5)))
            return responses, unknown

    responses, unknown = run(scenario())
    assert len(responses) == 1
    assert responses[0].result.status == api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
    assert unknown.status == Status.NOT_FOUND
