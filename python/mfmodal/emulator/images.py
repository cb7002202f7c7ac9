"""Image records and emulated builds.

Nothing is pulled or built: sandboxes run on the host with the emulator's own
Python environment. A build only records the definition and, when a fault
requests it, streams a few log lines over ImageJoinStreaming before its result.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from google.protobuf.json_format import MessageToDict
from modal_proto import api_pb2

from .faults import ImageBuildPlan
from .ids import new_id
from .logstore import LogStream

log = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    id: str
    key: str
    definition: Dict[str, Any]
    builder_version: str
    status: str = "building"  # "building", "success" or "failure"
    result: Optional[api_pb2.GenericResult] = None
    logs: LogStream = field(default_factory=LogStream)
    builds: int = 0
    created_at: float = field(default_factory=time.time)
    built_at: Optional[float] = None

    @property
    def finished(self) -> bool:
        return self.status != "building"

    def to_json(self) -> Dict[str, Any]:
        return {
            "definition": self.definition,
            "builder_version": self.builder_version,
            "status": self.status,
            "result_status": api_pb2.GenericResult.GenericStatus.Name(self.result.status) if self.result else None,
            "exception": self.result.exception if self.result else "",
            "builds": self.builds,
            "log_lines": len(self.logs.entries),
            "created_at": self.created_at,
            "built_at": self.built_at,
        }


def describe_image(request: api_pb2.ImageGetOrCreateRequest) -> Dict[str, Any]:
    """Return the parts of an image definition that the state dump records."""
    image = request.image
    commands = list(image.dockerfile_commands)
    registry_tag = None
    if not image.base_images:
        for command in commands:
            if command.upper().startswith("FROM "):
                registry_tag = command[5:].strip()
                break
    return {
        "dockerfile_commands": commands,
        "base_images": [{"docker_tag": base.docker_tag, "image_id": base.image_id} for base in image.base_images],
        "registry_tag": registry_tag,
        "registry_auth_type": api_pb2.RegistryAuthType.Name(image.image_registry_config.registry_auth_type),
        "context_files": [context_file.filename for context_file in image.context_files],
        "secret_ids": list(image.secret_ids),
        "gpu_config": MessageToDict(image.gpu_config, preserving_proto_field_name=True),
        "build_args": dict(image.build_args),
        "namespace": api_pb2.DeploymentNamespace.Name(request.namespace),
        "force_build": request.force_build,
        "app_id": request.app_id,
    }


def image_key(request: api_pb2.ImageGetOrCreateRequest, builder_version: str) -> str:
    digest = hashlib.sha256(request.image.SerializeToString(deterministic=True))
    digest.update(f"\0{builder_version}\0{request.namespace}".encode())
    return digest.hexdigest()


def image_metadata(builder_version: str) -> api_pb2.ImageMetadata:
    return api_pb2.ImageMetadata(
        python_version_info=platform.python_version(),
        image_builder_version=builder_version,
    )


class ImageStore:
    def __init__(self, on_change: Callable[[], None]) -> None:
        self.images: Dict[str, ImageRecord] = {}
        self._by_key: Dict[str, str] = {}
        self._tasks: List[asyncio.Task] = []
        self._on_change = on_change

    def get(self, image_id: str) -> Optional[ImageRecord]:
        return self.images.get(image_id)

    def find(self, key: str) -> Optional[ImageRecord]:
        image_id = self._by_key.get(key)
        return self.images.get(image_id) if image_id else None

    def chain(self, image_id: str) -> List[Dict[str, Any]]:
        """Return the layers of an image, from the root layer to ``image_id``."""
        layers: List[Dict[str, Any]] = []
        seen = set()
        current = self.images.get(image_id)
        while current is not None and current.id not in seen:
            seen.add(current.id)
            layers.append({"image_id": current.id, **current.definition})
            bases = current.definition["base_images"]
            current = self.images.get(bases[0]["image_id"]) if bases else None
        return list(reversed(layers))

    def build(self, record: Optional[ImageRecord], key: str, definition: Dict[str, Any],
              builder_version: str, plan: ImageBuildPlan) -> ImageRecord:
        """Start a build for a new definition, or a rebuild of ``record``."""
        if record is None:
            record = ImageRecord(new_id("im"), key, definition, builder_version)
            self.images[record.id] = record
            self._by_key[key] = record.id
        else:
            record.definition = definition
            record.status = "building"
            record.result = None
            record.logs = LogStream()
        record.builds += 1
        log.info("image %s: build %d (%s), commands %s", record.id, record.builds, plan.mode,
                 definition["dockerfile_commands"])
        if plan.mode == "instant":
            self._finish(record, success=True, message="")
        else:
            task = asyncio.get_running_loop().create_task(self._stream_build(record, plan))
            self._tasks.append(task)
        self._on_change()
        return record

    async def _stream_build(self, record: ImageRecord, plan: ImageBuildPlan) -> None:
        commands = record.definition["dockerfile_commands"]
        failed = plan.mode == "fail"
        message = plan.message or f"Build step failed: {commands[-1] if commands else 'no commands'}"
        lines = [f"Building image {record.id}"]
        lines += [f"=> Step {index}/{len(commands)}: {command}" for index, command in enumerate(commands, 1)]
        final = f"Error: {message}" if failed else f"Built image {record.id}"
        lines = lines[: max(plan.lines - 1, 0)] + [final] if plan.lines else []
        pause = plan.seconds / max(len(lines), 1)
        for line in lines:
            await asyncio.sleep(pause)
            record.logs.append(line + "\n")
        self._finish(record, success=not failed, message=message)
        self._on_change()

    @staticmethod
    def _finish(record: ImageRecord, *, success: bool, message: str) -> None:
        if success:
            record.status = "success"
            record.result = api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS)
        else:
            record.status = "failure"
            record.result = api_pb2.GenericResult(
                status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE, exception=message)
        record.built_at = time.time()
        record.logs.close()
        log.info("image %s: build %s", record.id, record.status)

    def cancel_builds(self) -> None:
        for task in self._tasks:
            task.cancel()

    def to_json(self) -> Dict[str, Any]:
        return {record.id: record.to_json() for record in self.images.values()}
