"""Validation of a sandbox's resource request and the environment variables that expose it."""

from __future__ import annotations

from typing import Dict

from modal_proto import api_pb2

# GPU type names that Modal's GPU guide (modal.com/docs/guide/gpu) lists. Clients send
# the name upper-cased in GPUConfig.gpu_type and leave validation to the server.
# NOTE: the list and the A10 limit come from a summary of that guide, not from Modal's
# server, whose exact rules and messages are not public.
GPU_TYPES = ("T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000",
             "H100", "H100!", "H200", "B200", "B200+")
MAX_GPU_COUNT = 8
# The same guide allows at most 4 A10 GPUs per container.
MAX_GPU_COUNT_BY_TYPE = {"A10": 4, "A10G": 4}

# Clients before early 2025 sent only the GPUType enum; map it to today's names.
_LEGACY_GPU_TYPES = {
    api_pb2.GPU_TYPE_T4: "T4",
    api_pb2.GPU_TYPE_A100: "A100-40GB",
    api_pb2.GPU_TYPE_A10G: "A10G",
    api_pb2.GPU_TYPE_A100_80GB: "A100-80GB",
    api_pb2.GPU_TYPE_L4: "L4",
    api_pb2.GPU_TYPE_H100: "H100",
    api_pb2.GPU_TYPE_L40S: "L40S",
    api_pb2.GPU_TYPE_H200: "H200",
}


class ResourceError(ValueError):
    """An invalid resource request; the message names the field and value."""


def gpu_string(gpu_config: api_pb2.GPUConfig) -> str:
    """Return the validated GPU request as ``TYPE:COUNT``, or "" when no GPU is requested.

    Raises ResourceError for an unknown type or a count outside the type's range (1 to 8,
    or 1 to 4 for A10 and A10G).
    """
    name = gpu_config.gpu_type.strip()
    if not name and gpu_config.type:
        name = _LEGACY_GPU_TYPES.get(gpu_config.type, "")
        if not name:
            raise ResourceError(f"invalid GPU type enum value {gpu_config.type}: expected a gpu_type string")
    if not name:
        if gpu_config.count:
            raise ResourceError(f"invalid GPU request: count {gpu_config.count} without a gpu_type")
        return ""

    upper = name.upper()
    if upper not in GPU_TYPES:
        raise ResourceError(f'invalid GPU type "{name}": expected one of {", ".join(GPU_TYPES)}')
    count = gpu_config.count
    limit = MAX_GPU_COUNT_BY_TYPE.get(upper, MAX_GPU_COUNT)
    if not 1 <= count <= limit:
        raise ResourceError(f"invalid GPU count {count} for {upper}: expected 1 to {limit}")
    return f"{upper}:{count}"


def resources_json(resources: api_pb2.Resources, gpu: str) -> Dict[str, object]:
    return {
        "milli_cpu": resources.milli_cpu,
        "milli_cpu_max": resources.milli_cpu_max,
        "memory_mb": resources.memory_mb,
        "memory_mb_max": resources.memory_mb_max,
        "gpu": gpu,
    }


def resource_environment(resources: api_pb2.Resources, gpu: str) -> Dict[str, str]:
    """Return MODAL_GPU, MODAL_CPU and MODAL_MEMORY; each is "" when the request leaves it unset."""
    cpu = ""
    if resources.milli_cpu:
        cpu = f"{resources.milli_cpu / 1000:.3f}".rstrip("0").rstrip(".")
    return {
        "MODAL_GPU": gpu,
        "MODAL_CPU": cpu,
        "MODAL_MEMORY": str(resources.memory_mb) if resources.memory_mb else "",
    }
