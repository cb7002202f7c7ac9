"""The job description that mfmodal-engine runs for one task attempt.

Everything here is a pure function of its arguments and of Metaflow's
configuration, so the job of a task can be built and checked without a
network.  The schema is the one of `mfmodal-engine run --job` (doc/job.md).
"""

import json
import platform
import re
import shlex

from metaflow.metaflow_config import (
    AWS_SECRETS_MANAGER_DEFAULT_REGION,
    CARD_S3ROOT,
    DATASTORE_SYSROOT_S3,
    DATATOOLS_S3ROOT,
    DEFAULT_METADATA,
    DEFAULT_SECRETS_BACKEND_TYPE,
    OTEL_ENDPOINT,
    OTEL_SERVICE_NAME,
    S3_ENDPOINT_URL,
    S3_SERVER_SIDE_ENCRYPTION,
    SERVICE_HEADERS,
    SERVICE_INTERNAL_URL,
)
from metaflow.metaflow_config_funcs import config_values
from metaflow.package import MetaflowPackage

from .modal_exception import ModalException

# The engine's GPU grammar (src/gpu.c): TYPE[:COUNT], case-insensitive, the
# type made of letters, digits, '-', '!' and '+' (at most 31 characters), the
# count a whole number from 1 to 8.  The type itself is checked by Modal.
GPU_COUNT_MAX = 8
GPU_TYPE_MAX_CHARS = 31
_GPU_TYPE_RE = re.compile(r"^[A-Za-z0-9!+-]+$")

# GPU types that Modal's GPU guide (modal.com/docs/guide/gpu, read in 2026)
# lists, plus A10G, which Modal also accepts.  Only quoted in messages:
# Modal, not the client, decides which types exist.
MODAL_GPU_TYPES = (
    "T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB",
    "RTX-PRO-6000", "H100", "H100!", "H200", "B200", "B200+",
)

# Modal ends a sandbox after at most 24 hours.
MODAL_TIMEOUT_MAX = 86400

# The variable that marks a task as running in a sandbox.  The decorator's
# task hooks act only when it is set, because the same hooks also run in the
# local fallback attempt of @catch.
SANDBOX_MARKER = "MFMODAL_SANDBOX"

# Long --input-paths values (a join after a wide foreach) travel in chunks of
# this size as environment variables, expanded by bash in the sandbox, which
# keeps the command well below Modal's limit of 65,520 bytes.
INPUT_PATHS_CHUNK_CHARS = 30 * 1024

# The code package download is retried with a pause of 2, 4, 6, ... seconds,
# because a fresh object can take a moment to become visible to every reader.
PACKAGE_DOWNLOAD_ATTEMPTS = 5

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_gpu(value):
    """Return the GPU string normalised as Modal expects it (upper case).

    Raise ValueError with the reason when value does not follow TYPE[:COUNT].
    """
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise ValueError(
            "expected Modal's GPU string TYPE or TYPE:COUNT, such as \"A100\" "
            "or \"A100:%d\", not the number %r" % (value if value else 1, value)
        )
    if not isinstance(value, str):
        raise ValueError(
            "expected Modal's GPU string TYPE or TYPE:COUNT, got %r" % (value,)
        )
    gpu_type, sep, count = value.partition(":")
    if not gpu_type or len(gpu_type) > GPU_TYPE_MAX_CHARS:
        raise ValueError(
            "expected TYPE or TYPE:COUNT, such as \"A100\" or \"H100:8\""
        )
    if not _GPU_TYPE_RE.match(gpu_type):
        raise ValueError(
            "the type may contain letters, digits, '-', '!' and '+' only (Modal's "
            "types: %s)" % ", ".join(MODAL_GPU_TYPES)
        )
    if sep:
        if not count.isdigit() or not 1 <= int(count) <= GPU_COUNT_MAX:
            raise ValueError(
                "the count after ':' must be a whole number from 1 to %d"
                % GPU_COUNT_MAX
            )
        return "%s:%d" % (gpu_type.upper(), int(count))
    return gpu_type.upper()


def gpu_count(gpu):
    """Return the number of GPUs a parsed GPU string requests."""
    _, sep, count = gpu.partition(":")
    return int(count) if sep else 1


def default_image():
    """Return Modal's debian_slim image for this interpreter's Python minor version."""
    major, minor, _ = platform.python_version_tuple()
    return {"debian_slim": "%s.%s" % (major, minor)}


def image_spec(image):
    """Return the job's image object for the decorator's image attribute.

    None gives debian_slim with the local Python version, a string names a
    registry image, and a list of strings starting with FROM gives Dockerfile
    commands.  Raise ValueError for anything else.
    """
    if image is None:
        return default_image()
    if isinstance(image, str):
        if not image.strip():
            raise ValueError("expected an image name such as \"python:3.11-slim\"")
        return {"registry": image.strip()}
    if isinstance(image, (list, tuple)):
        commands = list(image)
        if not commands or not all(isinstance(c, str) for c in commands):
            raise ValueError("expected a list of Dockerfile commands (strings)")
        if not commands[0].startswith("FROM "):
            raise ValueError(
                "the first Dockerfile command must be FROM IMAGE, got %r" % commands[0]
            )
        return {"dockerfile_commands": commands}
    raise ValueError(
        "expected a registry image name (a string) or a list of Dockerfile "
        "commands, got %r" % (image,)
    )


def check_env(env):
    """Return env as a dict of strings, or raise ValueError that names the bad entry."""
    if not isinstance(env, dict):
        raise ValueError("expected a dict of variable names to values, got %r" % (env,))
    result = {}
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
            raise ValueError(
                "%r is not a valid environment variable name (letters, digits "
                "and '_', not starting with a digit)" % (name,)
            )
        if value is None or isinstance(value, (dict, list)):
            raise ValueError(
                "the value of %s must be a string or a number, got %r" % (name, value)
            )
        result[name] = str(value)
    return result


def check_secrets(secrets):
    """Return secrets as a list of names, taking a single string as one name."""
    if isinstance(secrets, str):
        secrets = [secrets]
    if not isinstance(secrets, (list, tuple)):
        raise ValueError("expected a list of Modal secret names, got %r" % (secrets,))
    names = []
    for name in secrets:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("expected non-empty secret names, got %r" % (name,))
        names.append(name.strip())
    return names


def split_secret_names(text):
    """Return the names in a comma-separated list such as METAFLOW_MODAL_SECRETS."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def parse_s3_url(url):
    """Return (bucket, key) of an s3:// URL."""
    if not url.startswith("s3://"):
        raise ModalException("expected an s3:// URL, got %s" % url)
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not key:
        raise ModalException("expected s3://BUCKET/KEY, got %s" % url)
    return bucket, key


def split_input_paths(input_paths):
    """Return (option value, variables) for a long --input-paths value.

    The value becomes ${METAFLOW_INPUT_PATHS_0}${METAFLOW_INPUT_PATHS_1}...,
    which bash in the sandbox expands from the variables.
    """
    chunks = {
        "METAFLOW_INPUT_PATHS_%d" % (i // INPUT_PATHS_CHUNK_CHARS):
            input_paths[i:i + INPUT_PATHS_CHUNK_CHARS]
        for i in range(0, len(input_paths), INPUT_PATHS_CHUNK_CHARS)
    }
    return "".join("${%s}" % name for name in chunks), chunks


# Exit status of the download script when boto3 or requests is missing.
_MISSING_PACKAGES_STATUS = 3

_DOWNLOAD_SCRIPT = (
    "import os, sys\n"
    "try:\n"
    "    import boto3, requests\n"
    "except ImportError:\n"
    "    sys.exit(%d)\n"
    "endpoint = os.environ.get('METAFLOW_S3_ENDPOINT_URL') or None\n"
    "boto3.client('s3', endpoint_url=endpoint).download_file(%%r, %%r, 'job.tar')\n"
    % _MISSING_PACKAGES_STATUS
)


def package_commands(package_url, package_metadata):
    """Return the bash lines that fetch and unpack the code package.

    They run in a fresh directory, like Metaflow's Batch and Kubernetes
    wrappers: boto3 downloads the package, METAFLOW_S3_ENDPOINT_URL honoured,
    then Metaflow's packaging code gives the commands that extract it and the
    variables (PYTHONPATH, METAFLOW_EXTRACTED_ROOT) that make its content
    importable.  The download script also reports, by its exit status,
    whether the image lacks boto3 or requests.  Only then are they installed
    with pip (unless METAFLOW_SKIP_INSTALL_DEPENDENCIES is set), so an image
    keeps its own versions and a ready image pays for one Python start only.
    """
    bucket, key = parse_s3_url(package_url)
    download = "python -c %s" % shlex.quote(_DOWNLOAD_SCRIPT % (bucket, key))
    failed = "Failed to download the code package from %s after %d attempts." % (
        package_url, PACKAGE_DOWNLOAD_ATTEMPTS)
    lines = [
        "echo 'Setting up the task environment.'",
        "mkdir -p mf-task && cd mf-task && mkdir -p .metaflow || exit 1",
        "attempt=1",
        "installed=",
        "while true; do",
        "  %s" % download,
        "  status=$?",
        "  [ $status -eq 0 ] && break",
        "  if [ $status -eq %d ]; then" % _MISSING_PACKAGES_STATUS,
        '    if [ -n "$installed" ] || [ -n "${METAFLOW_SKIP_INSTALL_DEPENDENCIES:-}" ]; then',
        "      echo 'python cannot import boto3 and requests, which the code package "
        "download needs. Use an image that has them, or unset "
        "METAFLOW_SKIP_INSTALL_DEPENDENCIES so they are installed with pip.' >&2",
        "      exit 1",
        "    fi",
        "    echo 'Installing boto3 and requests with pip.'",
        "    python -m pip install -qqq --no-compile --no-cache-dir "
        "--disable-pip-version-check boto3 requests || "
        "{ echo 'Failed to install boto3 and requests with pip.' >&2; exit 1; }",
        "    installed=1",
        "    continue",
        "  fi",
        "  if [ $attempt -ge %d ]; then" % PACKAGE_DOWNLOAD_ATTEMPTS,
        "    echo %s >&2" % shlex.quote(failed),
        "    exit 1",
        "  fi",
        "  sleep $((attempt * 2)); attempt=$((attempt + 1))",
        "done",
        "echo 'Code package downloaded.'",
    ]
    extract = MetaflowPackage.get_extract_commands(
        package_metadata, "job.tar", dest_dir="."
    )
    lines.append("{ %s; } || exit 1" % " && ".join(extract))
    post_extract = MetaflowPackage.get_post_extract_env_vars(
        package_metadata, dest_dir="$(pwd)"
    )
    for name, value in post_extract.items():
        # Metaflow's convention: a name ending in ':' replaces the variable,
        # any other name is prepended to the existing value.
        if name.endswith(":"):
            lines.append("export %s=%s" % (name[:-1], value))
        else:
            lines.append("export %s=%s:$(printenv %s)" % (name, value, name))
    return lines


def remote_command(package_url, package_metadata, step_command, bootstrap_commands=()):
    """Return the bash script the sandbox runs for one task attempt.

    The script sets up the code package and then replaces itself with the
    task (exec), so the sandbox's exit status is the task's.  It writes no log
    files: mfmodal-engine relays and stores the sandbox's output.
    """
    lines = [
        "export PYTHONUNBUFFERED=x",
        # Environments such as @conda call these helpers in their bootstrap
        # commands, and the engine already records every output line.
        'mflog() { echo "$1"; }',
        "flush_mflogs() { :; }",
    ]
    lines += package_commands(package_url, package_metadata)
    lines.append("echo 'Task is starting.'")
    if bootstrap_commands:
        lines.append("{ %s; } || exit 1" % " && ".join(bootstrap_commands))
    lines.append("exec %s" % step_command)
    return "\n".join(lines) + "\n"


def metaflow_settings():
    """Return the METAFLOW_* settings a remote task needs, as Batch sends them."""
    settings = {
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": DATASTORE_SYSROOT_S3,
        "METAFLOW_DATATOOLS_S3ROOT": DATATOOLS_S3ROOT,
        "METAFLOW_CARD_S3ROOT": CARD_S3ROOT,
        "METAFLOW_S3_ENDPOINT_URL": S3_ENDPOINT_URL,
        "METAFLOW_S3_SERVER_SIDE_ENCRYPTION": S3_SERVER_SIDE_ENCRYPTION,
        "METAFLOW_DEFAULT_METADATA": DEFAULT_METADATA,
        "METAFLOW_SERVICE_URL": SERVICE_INTERNAL_URL,
        "METAFLOW_DEFAULT_SECRETS_BACKEND_TYPE": DEFAULT_SECRETS_BACKEND_TYPE,
        "METAFLOW_AWS_SECRETS_MANAGER_DEFAULT_REGION": AWS_SECRETS_MANAGER_DEFAULT_REGION,
        "METAFLOW_OTEL_ENDPOINT": OTEL_ENDPOINT,
        "METAFLOW_OTEL_SERVICE_NAME": OTEL_SERVICE_NAME,
        "METAFLOW_RUNTIME_ENVIRONMENT": "modal",
    }
    if SERVICE_HEADERS:
        settings["METAFLOW_SERVICE_HEADERS"] = json.dumps(SERVICE_HEADERS)
    # Batch forwards these groups too: @conda/@pypi settings and debug switches.
    for name, value in config_values():
        if name.startswith(("METAFLOW_CONDA_", "METAFLOW_DEBUG_")):
            settings[name] = value
    return {name: str(value) for name, value in settings.items() if value is not None}


def sandbox_environment(task, package, user, flow_filename, step_env, decorator_env,
                        credentials=None, input_path_chunks=None):
    """Return the environment of the sandbox, in increasing precedence.

    task is a dict with flow, run, step, task and attempt, and package a dict
    with url, sha and metadata.  Metaflow's settings come first, then @environment's
    variables (step_env), the decorator's env, forwarded credentials, and last
    what identifies the task and its code, which a user value must not
    replace.
    """
    env = metaflow_settings()
    env.update(step_env or {})
    env.update(decorator_env or {})
    env.update(credentials or {})
    env.update({
        "METAFLOW_CODE_URL": package["url"],
        "METAFLOW_CODE_SHA": package["sha"],
        "METAFLOW_CODE_METADATA": package["metadata"],
        "METAFLOW_CODE_DS": "s3",
        "METAFLOW_USER": user,
        "METAFLOW_FLOW_FILENAME": flow_filename,
        "METAFLOW_RUN_ID": str(task["run"]),
        SANDBOX_MARKER: "1",
    })
    env.update(input_path_chunks or {})
    return env


def task_url(datastore_root, task):
    """Return the s3:// URL of the task's directory in the datastore."""
    return "/".join(
        [datastore_root.rstrip("/"), task["flow"], str(task["run"]), task["step"],
         str(task["task"])]
    )


def build_job(task, command, resources, env, secrets, package_url, package_path,
              datastore_root, metadata_dir=None):
    """Return the job description for one task attempt.

    resources contains cpu, memory, gpu (None for none), image (a job image
    object) and timeout.  package_path is the local file the engine uploads
    when the package object is missing.  metadata_dir, when given, is the
    local .metaflow directory the engine syncs the task's metadata into.
    """
    task_dir = task_url(datastore_root, task)
    job = {
        "id": "%s/%s/%s/%s/%d" % (task["flow"], task["run"], task["step"],
                                  task["task"], task["attempt"]),
        "command": command,
        "image": resources["image"],
        "cpu": resources["cpu"],
        "memory": resources["memory"],
        "timeout": resources["timeout"],
        "env": env,
        "secrets": list(secrets),
        "task": {
            "flow": task["flow"],
            "run": str(task["run"]),
            "step": task["step"],
            "task": str(task["task"]),
            "attempt": int(task["attempt"]),
        },
        "package": {"url": package_url},
        "logs": {"url": task_dir},
    }
    if resources.get("gpu"):
        job["gpu"] = resources["gpu"]
    if package_path:
        job["package"]["path"] = package_path
    if metadata_dir:
        job["metadata"] = {"url": task_dir, "dir": metadata_dir}
    return job
