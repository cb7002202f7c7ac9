"""Fast tests of the @modal decorator's validation, the job description and
the engine hand-over; no server and no network."""

import hashlib
import json
import os
import shlex
import stat
import subprocess
import sys
import textwrap

import pytest

import metaflow  # noqa: F401  (loads the extension before its modules are imported)
from metaflow.decorators import InvalidDecoratorAttribute
from metaflow.plugins.resources_decorator import ResourcesDecorator
from metaflow.plugins.timeout_decorator import TimeoutDecorator
from metaflow.plugins.retry_decorator import RetryDecorator
from metaflow_extensions.modal.plugins import modal_engine
from metaflow_extensions.modal.plugins.modal_decorator import ModalDecorator
from metaflow_extensions.modal.plugins.modal_exception import ModalException
from metaflow_extensions.modal.plugins.modal_job import (
    INPUT_PATHS_CHUNK_CHARS,
    SANDBOX_MARKER,
    build_job,
    parse_gpu,
    remote_command,
    sandbox_environment,
    split_input_paths,
)

PACKAGE_METADATA = json.dumps({"version": 0, "archive_format": "tgz", "mfcontent_version": 1})
PACKAGE_URL = "s3://bucket/metaflow/HelloFlow/data/ab/abcdef"


class FakeDatastore:
    def __init__(self, kind="s3"):
        self.TYPE = kind


class OtherDecorator:
    """Stands for a decorator that only needs a name here."""

    def __init__(self, name):
        self.name = name


def make_modal(**attributes):
    deco = ModalDecorator(attributes=attributes, statically_defined=True)
    deco.external_init()
    return deco


def init_step(deco, *others, datastore="s3"):
    for other in others:
        if hasattr(other, "external_init"):
            other.external_init()
    deco.step_init(None, None, "train", [deco, *others], None, FakeDatastore(datastore),
                   lambda *args, **kwargs: None)
    return deco


def init_error(deco, *others, datastore="s3"):
    with pytest.raises(ModalException) as info:
        init_step(deco, *others, datastore=datastore)
    return str(info.value)


# GPU strings


@pytest.mark.parametrize("text, expected", [
    ("a100", "A100"),
    ("A100:4", "A100:4"),
    ("a100-80gb:2", "A100-80GB:2"),
    ("h100!", "H100!"),
    ("B200+:8", "B200+:8"),
    ("T4:01", "T4:1"),
])
def test_gpu_valid(text, expected):
    assert parse_gpu(text) == expected


@pytest.mark.parametrize("value, reason", [
    ("", "expected TYPE or TYPE:COUNT"),
    (":2", "expected TYPE or TYPE:COUNT"),
    ("A100:0", "whole number from 1 to 8"),
    ("A100:9", "whole number from 1 to 8"),
    ("A100:", "whole number from 1 to 8"),
    ("A100:x", "whole number from 1 to 8"),
    ("A100:123", "whole number from 1 to 8"),
    ("A 100", "letters, digits, '-', '!' and '+' only"),
    ("A" * 32, "expected TYPE or TYPE:COUNT"),
    (2, "not the number 2"),
    (True, "not the number True"),
    (["A100"], "got ['A100']"),
])
def test_gpu_invalid(value, reason):
    with pytest.raises(ValueError) as info:
        parse_gpu(value)
    assert reason in str(info.value)


# Validation in step_init


def test_defaults_are_valid():
    deco = init_step(make_modal())
    assert deco.attributes["cpu"] == 1
    assert deco.attributes["memory"] == 1024
    assert deco.attributes["gpu"] is None
    assert deco.attributes["timeout"] == 600
    major, minor = sys.version_info[:2]
    assert deco.image == {"debian_slim": "%d.%d" % (major, minor)}
    assert deco.env == {}


def test_local_datastore_rejected():
    message = init_error(make_modal(), datastore="local")
    assert "@modal on step *train*" in message
    assert "needs the S3 datastore" in message
    assert "local datastore" in message
    assert "--datastore=s3" in message
    assert "METAFLOW_DEFAULT_DATASTORE=s3" in message


def test_invalid_gpu_message():
    message = init_error(make_modal(gpu="A100:0"))
    assert "gpu='A100:0' is invalid" in message
    assert "the count after ':' must be a whole number from 1 to 8" in message
    assert 'gpu="H100:8"' in message


def test_gpu_count_instead_of_type():
    message = init_error(make_modal(gpu=2))
    assert "gpu=2 is invalid" in message
    assert "not the number 2" in message


def test_gpu_normalised():
    assert init_step(make_modal(gpu="a10g")).attributes["gpu"] == "A10G"


@pytest.mark.parametrize("cpu", [0, -1, "many", None, True])
def test_cpu_not_positive(cpu):
    message = init_error(make_modal(cpu=cpu))
    assert "cpu=%r is invalid: give a positive number of CPU cores" % (cpu,) in message


def test_cpu_fraction_allowed():
    assert init_step(make_modal(cpu=0.5)).attributes["cpu"] == 0.5
    assert init_step(make_modal(cpu="2")).attributes["cpu"] == 2


@pytest.mark.parametrize("memory", [0, -512, 1.5, "lots"])
def test_memory_not_positive(memory):
    message = init_error(make_modal(memory=memory))
    assert "memory=%r is invalid: give a positive whole number of MB" % (memory,) in message


@pytest.mark.parametrize("timeout", [0, -5, 1.5, "soon", 86401])
def test_timeout_not_positive_integer(timeout):
    message = init_error(make_modal(timeout=timeout))
    assert "timeout=%r is invalid: give a whole number of seconds from 1 to 86400" % (
        timeout,) in message


def test_unknown_parameter():
    with pytest.raises(InvalidDecoratorAttribute) as info:
        ModalDecorator(attributes={"gpus": "A100"})
    assert "gpus" in str(info.value)
    assert "modal" in str(info.value)


@pytest.mark.parametrize("image, reason", [
    (123, "expected a registry image name"),
    ("  ", "expected an image name"),
    (["RUN pip install torch"], "the first Dockerfile command must be FROM IMAGE"),
    ([], "expected a list of Dockerfile commands"),
])
def test_image_invalid(image, reason):
    message = init_error(make_modal(image=image))
    assert "image=%r is invalid" % (image,) in message
    assert reason in message


def test_image_kinds():
    assert init_step(make_modal(image="python:3.12-slim")).image == {"registry": "python:3.12-slim"}
    commands = ["FROM python:3.12-slim", "RUN pip install boto3"]
    assert init_step(make_modal(image=commands)).image == {"dockerfile_commands": commands}


def test_env_invalid_name():
    message = init_error(make_modal(env={"1BAD": "x"}))
    assert "env is invalid: '1BAD' is not a valid environment variable name" in message


def test_env_values_become_strings():
    assert init_step(make_modal(env={"LEVEL": 3})).env == {"LEVEL": "3"}


def test_secrets_invalid():
    message = init_error(make_modal(secrets=["ok", ""]))
    assert "secrets=['ok', ''] is invalid" in message


def test_secret_string_is_one_name():
    assert init_step(make_modal(secrets="aws")).secrets == ["aws"]


def test_mutable_defaults_not_shared():
    first, second = make_modal(), make_modal()
    first.attributes["env"]["A"] = "1"
    first.attributes["secrets"].append("aws")
    assert second.attributes["env"] == {}
    assert second.attributes["secrets"] == []
    assert ModalDecorator.defaults["env"] == {}


@pytest.mark.parametrize("other", ["batch", "kubernetes"])
def test_other_compute_decorator_rejected(other):
    message = init_error(make_modal(), OtherDecorator(other))
    assert "@%s also sends this step elsewhere to run. Keep either @modal or @%s" % (
        other, other) in message


def test_parallel_rejected():
    assert "@parallel (multi-node steps) is not supported" in init_error(
        make_modal(), OtherDecorator("parallel"))


# @resources


def test_resources_larger_values_win():
    resources = ResourcesDecorator(attributes={"cpu": 4, "memory": 512, "gpu": 2})
    deco = init_step(make_modal(cpu=2, memory=2048, gpu="A100"), resources)
    assert deco.attributes["cpu"] == 4
    assert deco.attributes["memory"] == 2048
    assert deco.attributes["gpu"] == "A100:2"


def test_resources_defaults_do_not_count():
    # @resources(cpu=...) alone must not raise memory to @resources' default 4096.
    deco = init_step(make_modal(), ResourcesDecorator(attributes={"cpu": 3}))
    assert deco.attributes["cpu"] == 3
    assert deco.attributes["memory"] == 1024


def test_resources_smaller_gpu_count_keeps_modal():
    deco = init_step(make_modal(gpu="H100:8"), ResourcesDecorator(attributes={"gpu": 2}))
    assert deco.attributes["gpu"] == "H100:8"


def test_resources_gpu_without_type():
    message = init_error(make_modal(), ResourcesDecorator(attributes={"gpu": 2}))
    assert "@resources(gpu=2) asks for GPUs, but @modal names no GPU type" in message
    assert '@modal(gpu="A100:2")' in message


def test_resources_gpu_over_eight():
    message = init_error(make_modal(gpu="A100"), ResourcesDecorator(attributes={"gpu": 9}))
    assert "@resources(gpu=9) is invalid" in message


# @timeout


def test_timeout_decorator_raises_sandbox_timeout():
    deco = init_step(make_modal(), TimeoutDecorator(attributes={"hours": 1}))
    assert deco.attributes["timeout"] == 3600 + 120


def test_short_timeout_decorator_keeps_default():
    deco = init_step(make_modal(), TimeoutDecorator(attributes={"seconds": 30}))
    assert deco.attributes["timeout"] == 600


def test_explicit_timeout_smaller_than_timeout_decorator():
    message = init_error(make_modal(timeout=600), TimeoutDecorator(attributes={"minutes": 20}))
    assert "timeout=600 ends the sandbox after 600 s, before @timeout's 1200 s" in message
    assert "at least 1320" in message


def test_explicit_timeout_covering_timeout_decorator():
    deco = init_step(make_modal(timeout=1250), TimeoutDecorator(attributes={"minutes": 20}))
    assert deco.attributes["timeout"] == 1320


def test_timeout_decorator_over_modal_maximum():
    message = init_error(make_modal(), TimeoutDecorator(attributes={"hours": 24}))
    assert "more than Modal's maximum sandbox lifetime of 86400 s" in message


# The launch process's checks


class FakeGraphNode:
    def __init__(self, name, decorators):
        self.name = name
        self.decorators = decorators


def test_missing_credentials_warned_once(monkeypatch):
    monkeypatch.setattr(ModalDecorator, "_credentials_checked", False)
    messages = []
    with_secret = init_step(make_modal(secrets=["aws"]))
    without = make_modal()
    without.step_init(None, None, "train", [without], None, FakeDatastore(),
                      lambda message, **kwargs: messages.append(message))
    graph = [FakeGraphNode("prepare", [with_secret]), FakeGraphNode("train", [without])]
    without._check_credentials_once(graph)
    without._check_credentials_once(graph)
    assert len(messages) == 1
    assert "no Modal secret is named for step(s) train and" in messages[0]
    assert "METAFLOW_MODAL_FORWARD_AWS_CREDENTIALS=1" in messages[0]


# Command rewriting in the launch process


class FakeCLIArgs:
    def __init__(self):
        self.commands = ["step"]
        self.command_args = ["train"]
        self.command_options = {"run-id": "5", "task-id": "2"}
        self.entrypoint = ["python3", "flow.py"]


class FakePackage:
    package_metadata = PACKAGE_METADATA
    blob = b"not really a tarball"

    def package_url(self):
        return "s3://bucket/metaflow/HelloFlow/data/12/1234"

    def package_sha(self):
        return "1234"


class FakeFlowDatastore:
    datastore_root = "s3://bucket/metaflow/"
    flow_name = "HelloFlow"


@pytest.fixture
def package_state(monkeypatch):
    """Class-level package state, restored after the test."""
    for name in ("package_url", "package_sha", "package_metadata", "package_path",
                 "_package_dir"):
        monkeypatch.setattr(ModalDecorator, name, None)


def test_package_written_once(package_state):
    deco = init_step(make_modal())
    ModalDecorator._save_package_once(FakeFlowDatastore(), FakePackage())
    sha = hashlib.sha1(FakePackage.blob).hexdigest()
    assert ModalDecorator.package_sha == sha
    assert ModalDecorator.package_url == "s3://bucket/metaflow/HelloFlow/data/%s/%s" % (
        sha[:2], sha)
    assert ModalDecorator.package_metadata == PACKAGE_METADATA
    path = ModalDecorator.package_path
    with open(path, "rb") as handle:
        assert handle.read() == FakePackage.blob

    # A second task of the run reuses the same file.
    ModalDecorator._save_package_once(FakeFlowDatastore(), FakePackage())
    assert ModalDecorator.package_path == path

    deco.runtime_finished(None)
    assert not os.path.exists(path)
    assert ModalDecorator.package_url is None


def test_package_uploaded_by_metaflow(package_state, monkeypatch):
    from metaflow_extensions.modal.plugins import modal_decorator

    monkeypatch.setattr(modal_decorator, "FEAT_ALWAYS_UPLOAD_CODE_PACKAGE", True)
    ModalDecorator._save_package_once(FakeFlowDatastore(), FakePackage())
    assert ModalDecorator.package_url == "s3://bucket/metaflow/HelloFlow/data/12/1234"
    assert ModalDecorator.package_sha == "1234"
    assert ModalDecorator.package_path is None


def test_runtime_step_cli_rewrites_attempts(monkeypatch):
    deco = init_step(make_modal())
    monkeypatch.setattr(ModalDecorator, "package_url", PACKAGE_URL)
    monkeypatch.setattr(ModalDecorator, "package_sha", "abcdef")
    monkeypatch.setattr(ModalDecorator, "package_metadata", PACKAGE_METADATA)
    monkeypatch.setattr(ModalDecorator, "package_path", "/tmp/package.tgz")
    args = FakeCLIArgs()
    deco.runtime_step_cli(args, retry_count=1, max_user_code_retries=1, ubf_context=None)
    assert args.commands == ["modal", "step"]
    assert args.command_args == ["train", PACKAGE_METADATA, "abcdef", PACKAGE_URL]
    assert args.command_options["package-path"] == "/tmp/package.tgz"
    assert args.entrypoint[0] == sys.executable


def test_runtime_step_cli_leaves_catch_fallback_local():
    deco = init_step(make_modal())
    args = FakeCLIArgs()
    deco.runtime_step_cli(args, retry_count=2, max_user_code_retries=1, ubf_context=None)
    assert args.commands == ["step"]
    assert args.command_args == ["train"]


def test_task_hooks_skip_outside_sandbox(monkeypatch):
    monkeypatch.delenv(SANDBOX_MARKER, raising=False)

    class Metadata:
        TYPE = "local"

        def register_metadata(self, *args):
            raise AssertionError("no metadata outside a sandbox")

    deco = init_step(make_modal())
    deco.task_pre_step("train", None, Metadata(), "5", "2", None, None, 0, 0, None, None)
    # Outside a sandbox there is nothing to sync, so task_finished touches no datastore.
    deco.task_finished("train", None, None, True, 0, 0)


# The job description


TASK = {"flow": "HelloFlow", "run": "17", "step": "train", "task": "3", "attempt": 1}
PACKAGE = {"url": PACKAGE_URL, "sha": "abcdef", "metadata": PACKAGE_METADATA}


def download_script(command):
    """Return the Python code of the command's package download, as bash passes it."""
    start = command.index("\n  python -c ") + 1
    end = command.index("\n  status=$?", start)
    argv = shlex.split(command[start:end])
    assert argv[:2] == ["python", "-c"]
    return argv[2]


def test_remote_command_is_valid_bash():
    command = remote_command(PACKAGE_URL, PACKAGE_METADATA,
                             "python -u flow.py step train --input-paths ${METAFLOW_INPUT_PATHS_0}")
    check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "download_file('bucket', 'metaflow/HelloFlow/data/ab/abcdef', 'job.tar')" in (
        download_script(command))
    assert "tar -xzf job.tar" in command
    assert "export METAFLOW_EXTRACTED_ROOT=" in command
    assert "exec python -u flow.py step train" in command.splitlines()[-1]
    assert "save_logs" not in command
    assert "mflog.tee" not in command


FAKE_PYTHON = """\
#!/bin/sh
# Plays python for the sandbox script: -c is the package download, -m pip an
# install, -u the task.
case "$1" in
-c)
    echo x >> "$STATE/downloads"
    if [ ! -e "$STATE/installed" ]; then exit 3; fi
    if [ -e "$STATE/fail-downloads" ] && [ "$(wc -l < "$STATE/downloads")" -le 1 ]; then
        exit 1
    fi
    cp "$STATE/job.tar" job.tar
    ;;
-m)
    echo "$*" >> "$STATE/pip"
    touch "$STATE/installed"
    ;;
-u)
    echo "task: $*"
    echo "cwd: $(basename "$PWD")"
    echo "extracted: $METAFLOW_EXTRACTED_ROOT"
    ls .mf_code
    exit 5
    ;;
esac
"""


def run_sandbox_script(tmp_path, installed=True, fail_downloads=False, extra_env=None):
    """Run the sandbox script with a fake python; return the CompletedProcess and state dir."""
    state = tmp_path / "state"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_script(bin_dir / "python", FAKE_PYTHON[len("#!/bin/sh\n"):])
    content = tmp_path / "content"
    (content / ".mf_code" / "metaflow").mkdir(parents=True)
    (content / "flow.py").write_text("# flow\n")
    subprocess.run(["tar", "-czf", str(state / "job.tar"), "-C", str(content), "."], check=True)
    if installed:
        (state / "installed").touch()
    if fail_downloads:
        (state / "fail-downloads").touch()
    command = remote_command(PACKAGE_URL, PACKAGE_METADATA,
                             "python -u flow.py step train --input-paths ${METAFLOW_INPUT_PATHS_0}")
    env = {"PATH": "%s:/usr/bin:/bin" % bin_dir, "STATE": str(state),
           "METAFLOW_INPUT_PATHS_0": "17/start/1"}
    env.update(extra_env or {})
    workdir = tmp_path / "sandbox"
    workdir.mkdir()
    result = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=60)
    return result, state


def test_sandbox_script_runs_task(tmp_path):
    result, state = run_sandbox_script(tmp_path)
    assert result.returncode == 5, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["Setting up the task environment.", "Code package downloaded.",
                         "Task is starting."]
    assert "task: -u flow.py step train --input-paths 17/start/1" in lines
    assert "cwd: mf-task" in lines
    assert "extracted: %s" % (tmp_path / "sandbox" / "mf-task") in lines
    assert "metaflow" in lines
    assert not (state / "pip").exists()


def test_sandbox_script_installs_missing_boto3(tmp_path):
    result, state = run_sandbox_script(tmp_path, installed=False)
    assert result.returncode == 5, result.stderr
    assert "Installing boto3 and requests with pip." in result.stdout
    assert (state / "pip").read_text().count("install") == 1
    assert "boto3 requests" in (state / "pip").read_text()


def test_sandbox_script_skip_install(tmp_path):
    result, state = run_sandbox_script(tmp_path, installed=False,
                                       extra_env={"METAFLOW_SKIP_INSTALL_DEPENDENCIES": "1"})
    assert result.returncode == 1
    assert "python cannot import boto3 and requests" in result.stderr
    assert not (state / "pip").exists()


def test_sandbox_script_retries_download(tmp_path):
    result, state = run_sandbox_script(tmp_path, fail_downloads=True)
    assert result.returncode == 5, result.stderr
    assert len((state / "downloads").read_text().split()) == 2


def test_remote_command_includes_bootstrap():
    command = remote_command(PACKAGE_URL, PACKAGE_METADATA, "python -u flow.py step train",
                             ["echo one", "echo two"])
    assert "{ echo one && echo two; } || exit 1" in command


def test_remote_command_quotes_odd_keys():
    url = "s3://bucket/it's here/HelloFlow/data/ab/abcdef"
    command = remote_command(url, PACKAGE_METADATA, "python -u flow.py step train")
    check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "download_file('bucket', \"it's here/HelloFlow/data/ab/abcdef\", 'job.tar')" in (
        download_script(command))


def test_input_paths_split_into_chunks():
    paths = ",".join("17/square/%d" % i for i in range(5000))
    value, chunks = split_input_paths(paths)
    assert len(chunks) == (len(paths) + INPUT_PATHS_CHUNK_CHARS - 1) // INPUT_PATHS_CHUNK_CHARS
    assert "".join(chunks[name] for name in sorted(chunks, key=lambda n: int(n.rsplit("_", 1)[1]))) == paths
    assert value == "".join("${%s}" % name for name in chunks)


def test_sandbox_environment_precedence():
    env = sandbox_environment(
        TASK, PACKAGE, "ada", "flow.py",
        step_env={"SHARED": "environment", "METAFLOW_CODE_URL": "user value"},
        decorator_env={"SHARED": "decorator"},
        credentials={"AWS_ACCESS_KEY_ID": "key"},
        input_path_chunks={"METAFLOW_INPUT_PATHS_0": "17/start/1"},
    )
    assert env["SHARED"] == "decorator"
    assert env["METAFLOW_CODE_URL"] == PACKAGE_URL
    assert env["METAFLOW_DEFAULT_DATASTORE"] == "s3"
    assert env["METAFLOW_USER"] == "ada"
    assert env["METAFLOW_RUN_ID"] == "17"
    assert env["METAFLOW_FLOW_FILENAME"] == "flow.py"
    assert env["METAFLOW_INPUT_PATHS_0"] == "17/start/1"
    assert env["AWS_ACCESS_KEY_ID"] == "key"
    assert env[SANDBOX_MARKER] == "1"
    assert all(isinstance(value, str) for value in env.values())


def test_build_job_fields():
    resources = {"cpu": 2, "memory": 4096, "gpu": "A100:2", "image": {"debian_slim": "3.11"},
                 "timeout": 900}
    job = build_job(TASK, "exec true", resources, {"A": "1"}, ["aws"], PACKAGE_URL,
                    "/tmp/pkg.tgz", "s3://bucket/metaflow/", "/work/.metaflow")
    task_dir = "s3://bucket/metaflow/HelloFlow/17/train/3"
    assert job["id"] == "HelloFlow/17/train/3/1"
    assert job["gpu"] == "A100:2"
    assert job["cpu"] == 2
    assert job["memory"] == 4096
    assert job["timeout"] == 900
    assert job["secrets"] == ["aws"]
    assert job["task"] == {"flow": "HelloFlow", "run": "17", "step": "train", "task": "3",
                           "attempt": 1}
    assert job["package"] == {"url": PACKAGE_URL, "path": "/tmp/pkg.tgz"}
    assert job["logs"] == {"url": task_dir}
    assert job["metadata"] == {"url": task_dir, "dir": "/work/.metaflow"}


def test_build_job_without_gpu_or_local_metadata():
    resources = {"cpu": 1, "memory": 1024, "gpu": None, "image": {"registry": "python:3.11"},
                 "timeout": 600}
    job = build_job(TASK, "exec true", resources, {}, [], PACKAGE_URL, None,
                    "s3://bucket/metaflow", None)
    assert "gpu" not in job
    assert "metadata" not in job
    assert job["package"] == {"url": PACKAGE_URL}


# Finding and starting the engine


def write_script(path, body):
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_engine_variable_not_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("MFMODAL_ENGINE", str(tmp_path / "missing"))
    with pytest.raises(ModalException) as info:
        modal_engine.find_engine()
    assert "MFMODAL_ENGINE is set to %s, which is not an executable file" % (
        tmp_path / "missing") in str(info.value)


def test_engine_missing_from_path(monkeypatch, tmp_path):
    monkeypatch.delenv("MFMODAL_ENGINE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ModalException) as info:
        modal_engine.find_engine()
    assert "needs the mfmodal-engine program, which is not on PATH" in str(info.value)
    assert "MFMODAL_ENGINE" in str(info.value)


def test_engine_found_on_path(monkeypatch, tmp_path):
    engine = write_script(tmp_path / "mfmodal-engine", "echo 'mfmodal-engine 0.1.7'\n")
    monkeypatch.delenv("MFMODAL_ENGINE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert modal_engine.find_engine() == engine
    assert modal_engine.check_engine_version(engine) == (0, 1, 7)


def test_engine_other_version(tmp_path):
    engine = write_script(tmp_path / "engine", "echo 'mfmodal-engine 0.2.0'\n")
    with pytest.raises(ModalException) as info:
        modal_engine.check_engine_version(engine)
    assert "is version 0.2.0, but this @modal extension needs version 0.1.x" in str(info.value)


def test_engine_not_an_engine(tmp_path):
    engine = write_script(tmp_path / "engine", "echo 'something else'\n")
    with pytest.raises(ModalException) as info:
        modal_engine.check_engine_version(engine)
    assert "printed 'something else' (exit status 0), not a mfmodal-engine version" in str(
        info.value)


def test_exec_engine_passes_job_on_stdin(tmp_path):
    engine = write_script(tmp_path / "engine", 'echo "args: $*"; cat; exit 7\n')
    job = {"id": "j", "env": {"AWS_SECRET_ACCESS_KEY": "hidden"}}
    program = textwrap.dedent("""
        import metaflow
        from metaflow_extensions.modal.plugins.modal_engine import exec_engine
        exec_engine(%r, %r, {"PATH": "/usr/bin:/bin", "TMPDIR": %r})
    """) % (engine, job, str(tmp_path))
    env = dict(os.environ, TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 7, result.stderr
    first, payload = result.stdout.split("\n", 1)
    assert first == "args: run --job -"
    assert json.loads(payload) == job
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("mfmodal-job-")] == []


# Waiting between attempts


class FakeNode:
    def __init__(self, decorators):
        self.decorators = decorators


class FakeContextObject:
    def __init__(self, decorators):
        self.graph = {"train": FakeNode(decorators)}
        self.messages = []

    def echo_always(self, message, **kwargs):
        self.messages.append(message)


class FakeContext:
    def __init__(self, decorators):
        self.obj = FakeContextObject(decorators)


def test_retry_waits_minutes_between_retries(monkeypatch):
    from metaflow_extensions.modal.plugins import modal_cli

    slept = []
    monkeypatch.setattr(modal_cli.time, "sleep", slept.append)
    retry = RetryDecorator(attributes={"times": 2, "minutes_between_retries": 3})
    ctx = FakeContext([retry])
    modal_cli._sleep_before_retry(ctx, "train", 0)
    assert slept == []
    modal_cli._sleep_before_retry(ctx, "train", 1)
    assert slept == [180]
    assert "Waiting 3 minute(s) before attempt 1 of step train" in ctx.obj.messages[0]


def test_retry_wait_needs_retry_decorator(monkeypatch):
    from metaflow_extensions.modal.plugins import modal_cli

    slept = []
    monkeypatch.setattr(modal_cli.time, "sleep", slept.append)
    modal_cli._sleep_before_retry(FakeContext([]), "train", 1)
    assert slept == []
