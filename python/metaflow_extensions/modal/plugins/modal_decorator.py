import math
import os
import shutil
import sys
import tempfile
from hashlib import sha1

from metaflow.decorators import StepDecorator
from metaflow.metadata_provider import MetaDatum
from metaflow.metadata_provider.util import sync_local_metadata_to_datastore
from metaflow.metaflow_config import (
    DATASTORE_LOCAL_DIR,
    FEAT_ALWAYS_UPLOAD_CODE_PACKAGE,
    MODAL_FORWARD_AWS_CREDENTIALS,
    MODAL_SECRETS,
)
from metaflow.plugins.timeout_decorator import get_run_time_limit_for_task

from .modal_engine import check_engine_version, find_engine
from .modal_exception import ModalException
from .modal_job import (
    MODAL_GPU_TYPES,
    MODAL_TIMEOUT_MAX,
    SANDBOX_MARKER,
    check_env,
    check_secrets,
    gpu_count,
    image_spec,
    parse_gpu,
    split_secret_names,
)

# Seconds added to @timeout for what runs before the step's code in the
# sandbox: starting it, installing boto3 when the image lacks it, downloading
# and unpacking the code package, importing the flow.
SETUP_MARGIN_SECS = 120

# Compute decorators that also send a step somewhere else to run.
_EXCLUSIVE_DECORATORS = ("batch", "kubernetes")


class ModalDecorator(StepDecorator):
    """
    Specifies that this step runs in a [Modal](https://modal.com) sandbox,
    while the rest of the flow runs where it was started.

    Each attempt of each task gets its own sandbox, started and followed by
    the `mfmodal-engine` program. The step needs the S3 datastore, and the
    sandbox needs credentials for it: name a Modal secret that contains them in
    `secrets` (or in METAFLOW_MODAL_SECRETS), or set
    METAFLOW_MODAL_FORWARD_AWS_CREDENTIALS=1 to send this machine's AWS
    credentials as an ephemeral secret.

    Parameters
    ----------
    cpu : float, default 1
        CPU cores reserved for the sandbox, fractions such as 0.5 included.
        If `@resources(cpu=...)` requests more, its value is used.
    memory : int, default 1024
        Memory of the sandbox in MB (MiB). If `@resources(memory=...)`
        requests more, its value is used.
    gpu : str, optional, default None
        Modal's GPU string `TYPE` or `TYPE:COUNT`, case-insensitive, such as
        "T4", "A10G", "A100:4", "A100-80GB:2" or "H100:8". Types include T4,
        L4, A10G, L40S, A100, A100-80GB, H100, H200 and B200. COUNT is 1 to 8
        (1 to 4 for A10G), 1 when left out. If `@resources(gpu=N)` requests
        more GPUs, N of this type are used. None: no GPU.
    image : str or List[str], optional, default None
        The sandbox's image: a registry image name such as
        "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime", or a list of
        Dockerfile commands starting with "FROM ...". The image needs
        `python` on PATH, and boto3 is installed with pip at start when missing.
        None: Modal's debian_slim image with this Python's minor version.
    timeout : int, default 600
        Seconds the sandbox may live, setup included. Modal ends it after
        that and the attempt fails with exit status 124. At most 86400 (24
        hours). With `@timeout`, the sandbox gets at least the `@timeout`
        duration plus 120 seconds for setup, and an explicit value smaller
        than `@timeout`'s duration is an error.
    env : Dict[str, str], default {}
        Environment variables of the task, applied after `@environment`'s.
        Sent to Modal as an ephemeral secret, never on a command line.
    secrets : List[str], default []
        Names of Modal secrets whose variables the task gets, after those of
        METAFLOW_MODAL_SECRETS. A later secret overrides an earlier one, and
        `env` overrides them all.
    """

    name = "modal"
    defaults = {
        "cpu": 1,
        "memory": 1024,
        "gpu": None,
        "image": None,
        "timeout": 600,
        "env": {},
        "secrets": [],
    }

    # @conda and @pypi build their environments for this platform.
    # NOTE: @conda and @pypi with @modal have never run: their bootstrap
    # downloads micromamba and packages, which the offline tests cannot.
    supports_conda_environment = True
    target_platform = "linux-64"

    # The code package of this run, shared by every @modal step of it:
    # written once to a local file that the engine uploads when the datastore
    # lacks it.
    package_url = None
    package_sha = None
    package_metadata = None
    package_path = None
    _package_dir = None
    _engine_checked = False
    _credentials_checked = False

    def init(self):
        # Decorator.__init__ copies `defaults` shallowly: give each instance
        # its own dict and list.
        if isinstance(self.attributes["env"], dict):
            self.attributes["env"] = dict(self.attributes["env"])
        if isinstance(self.attributes["secrets"], (list, tuple)):
            self.attributes["secrets"] = list(self.attributes["secrets"])

    # Validation (every process that builds the flow: launch, trampoline, task)

    def step_init(self, flow, graph, step, decos, environment, flow_datastore, logger):
        self.step = step
        self.logger = logger
        self.environment = environment
        self.flow_datastore = flow_datastore

        self._check_datastore(flow_datastore)
        self._check_other_decorators(decos)
        self._check_attributes()
        self._merge_resources(decos)
        self._set_timeout(decos)

    def _fail(self, message):
        raise ModalException("@modal on step *%s*: %s" % (self.step, message))

    def _check_datastore(self, flow_datastore):
        if flow_datastore.TYPE != "s3":
            self._fail(
                "the step needs the S3 datastore, because a Modal sandbox cannot "
                "read this machine's disk, but this run uses the %s datastore. "
                "Run the flow with `python flow.py --datastore=s3 run`, or set "
                "METAFLOW_DEFAULT_DATASTORE=s3 and "
                "METAFLOW_DATASTORE_SYSROOT_S3=s3://BUCKET/PREFIX in the "
                "environment or in Metaflow's configuration."
                % flow_datastore.TYPE
            )

    def _check_other_decorators(self, decos):
        for deco in decos:
            if deco.name in _EXCLUSIVE_DECORATORS:
                self._fail(
                    "@%s also sends this step elsewhere to run. Keep either "
                    "@modal or @%s." % (deco.name, deco.name)
                )
            if deco.name == "parallel":
                self._fail(
                    "@parallel (multi-node steps) is not supported with @modal. "
                    "Remove one of them."
                )

    def _check_attributes(self):
        attrs = self.attributes

        cpu = _number(attrs["cpu"])
        if cpu is None or cpu <= 0:
            self._fail(
                "cpu=%r is invalid: give a positive number of CPU cores, such "
                "as cpu=2 or cpu=0.5." % (attrs["cpu"],)
            )
        attrs["cpu"] = int(cpu) if cpu == int(cpu) else cpu

        memory = _number(attrs["memory"])
        if memory is None or memory <= 0 or memory != int(memory):
            self._fail(
                "memory=%r is invalid: give a positive whole number of MB, "
                "such as memory=8192." % (attrs["memory"],)
            )
        attrs["memory"] = int(memory)

        if attrs["gpu"] is not None:
            try:
                attrs["gpu"] = parse_gpu(attrs["gpu"])
            except ValueError as exc:
                self._fail(
                    "gpu=%r is invalid: %s. Use Modal's GPU string, such as "
                    "gpu=\"A100\" or gpu=\"H100:8\". Modal's types: %s."
                    % (attrs["gpu"], exc, ", ".join(MODAL_GPU_TYPES))
                )

        timeout = _number(attrs["timeout"])
        if (timeout is None or timeout != int(timeout) or
                not 1 <= timeout <= MODAL_TIMEOUT_MAX):
            self._fail(
                "timeout=%r is invalid: give a whole number of seconds from 1 "
                "to %d (Modal's maximum, 24 hours), such as timeout=3600."
                % (attrs["timeout"], MODAL_TIMEOUT_MAX)
            )
        attrs["timeout"] = int(timeout)

        try:
            self.image = image_spec(attrs["image"])
        except ValueError as exc:
            self._fail("image=%r is invalid: %s." % (attrs["image"], exc))
        try:
            self.env = check_env(attrs["env"])
        except ValueError as exc:
            self._fail("env is invalid: %s." % exc)
        try:
            self.secrets = split_secret_names(MODAL_SECRETS) + check_secrets(
                attrs["secrets"])
        except ValueError as exc:
            self._fail("secrets=%r is invalid: %s." % (attrs["secrets"], exc))

    def _merge_resources(self, decos):
        """Raise cpu, memory and the GPU count to what @resources requests."""
        for deco in decos:
            if deco.name != "resources":
                continue
            requested = _user_values(deco)
            cpu = _number(requested.get("cpu"))
            if cpu is not None and cpu > self.attributes["cpu"]:
                self.attributes["cpu"] = int(cpu) if cpu == int(cpu) else cpu
            memory = _number(requested.get("memory"))
            if memory is not None and memory > self.attributes["memory"]:
                self.attributes["memory"] = int(memory)
            gpus = _number(requested.get("gpu"))
            if not gpus:
                continue
            if self.attributes["gpu"] is None:
                self._fail(
                    "@resources(gpu=%s) asks for GPUs, but @modal names no GPU "
                    "type. Set one, such as @modal(gpu=\"A100:%d\") or "
                    "--with modal:gpu=A100:%d." % (requested["gpu"], gpus, gpus)
                )
            if int(gpus) > gpu_count(self.attributes["gpu"]):
                gpu_type = self.attributes["gpu"].partition(":")[0]
                try:
                    self.attributes["gpu"] = parse_gpu("%s:%d" % (gpu_type, gpus))
                except ValueError as exc:
                    self._fail("@resources(gpu=%s) is invalid: %s." % (
                        requested["gpu"], exc))

    def _set_timeout(self, decos):
        """Make the sandbox outlive @timeout by the setup margin."""
        if not any(deco.name == "timeout" for deco in decos):
            return
        limit = get_run_time_limit_for_task(decos)
        timeout = self.attributes["timeout"]
        if "timeout" in self._user_defined_attributes and timeout < limit:
            self._fail(
                "timeout=%d ends the sandbox after %d s, before @timeout's %d s "
                "have passed. Raise it to at least %d (@timeout plus %d s for "
                "setup), or remove it so the sandbox follows @timeout."
                % (timeout, timeout, limit, limit + SETUP_MARGIN_SECS,
                   SETUP_MARGIN_SECS)
            )
        needed = limit + SETUP_MARGIN_SECS
        if needed > MODAL_TIMEOUT_MAX:
            self._fail(
                "@timeout of %d s plus %d s for setup is more than Modal's "
                "maximum sandbox lifetime of %d s (24 hours). Shorten @timeout."
                % (limit, SETUP_MARGIN_SECS, MODAL_TIMEOUT_MAX)
            )
        self.attributes["timeout"] = max(timeout, needed)

    # Launch process: once per run, then once per task and attempt

    def runtime_init(self, flow, graph, package, run_id):
        self.flow = flow
        self.package = package
        self.run_id = run_id
        self._check_engine_once()
        self._check_credentials_once(graph)

    @classmethod
    def _check_engine_once(cls):
        if not cls._engine_checked:
            check_engine_version(find_engine())
            cls._engine_checked = True

    def _check_credentials_once(self, graph):
        cls = type(self)
        if cls._credentials_checked:
            return
        cls._credentials_checked = True
        if MODAL_FORWARD_AWS_CREDENTIALS:
            return
        steps = [
            node.name for node in graph
            for deco in node.decorators
            if deco.name == "modal" and not getattr(deco, "secrets", None)
        ]
        if steps:
            self.logger(
                "@modal: no Modal secret is named for step(s) %s and "
                "METAFLOW_MODAL_FORWARD_AWS_CREDENTIALS is off, so their sandboxes "
                "have datastore credentials only if their image brings them. Name "
                "a secret containing AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in "
                "@modal(secrets=[...]) or METAFLOW_MODAL_SECRETS, or set "
                "METAFLOW_MODAL_FORWARD_AWS_CREDENTIALS=1." % ", ".join(steps),
                bad=True,
            )

    def runtime_task_created(self, task_datastore, task_id, split_index, input_paths,
                             is_cloned, ubf_context):
        # A task that resume clones runs nowhere, so it needs no package.
        if not is_cloned:
            self._save_package_once(self.flow_datastore, self.package)

    @classmethod
    def _save_package_once(cls, flow_datastore, package):
        if cls.package_url is not None:
            return
        cls.package_metadata = package.package_metadata
        if FEAT_ALWAYS_UPLOAD_CODE_PACKAGE:
            # Metaflow uploads the package itself, and this call waits for it.
            cls.package_url = package.package_url()
            cls.package_sha = package.package_sha()
            return
        blob = package.blob
        sha = sha1(blob).hexdigest()
        # The content-addressed location Metaflow's own save_data would use.
        cls.package_url = "%s/%s/data/%s/%s" % (
            flow_datastore.datastore_root.rstrip("/"), flow_datastore.flow_name,
            sha[:2], sha)
        cls.package_sha = sha
        cls._package_dir = tempfile.mkdtemp(prefix="mfmodal-package-")
        path = os.path.join(cls._package_dir, "%s.tgz" % sha)
        with open(path, "wb") as handle:
            handle.write(blob)
        cls.package_path = path

    def runtime_step_cli(self, cli_args, retry_count, max_user_code_retries, ubf_context):
        # Once the user code's attempts are used up, the @catch fallback runs
        # locally, as it does for @batch and @kubernetes.
        if retry_count > max_user_code_retries:
            return
        cli_args.commands = ["modal", "step"]
        cli_args.command_args += [self.package_metadata, self.package_sha,
                                  self.package_url]
        cli_args.command_options["package-path"] = self.package_path
        cli_args.entrypoint[0] = sys.executable

    def runtime_finished(self, exception):
        cls = type(self)
        if cls._package_dir is not None:
            try:
                shutil.rmtree(cls._package_dir)
            except OSError as exc:
                self.logger("@modal: could not remove the local copy of the code "
                            "package in %s: %s" % (cls._package_dir, exc), bad=True)
        cls._package_dir = cls.package_path = None
        cls.package_url = cls.package_sha = cls.package_metadata = None
        cls._engine_checked = cls._credentials_checked = False

    # Task process: in the sandbox, or locally for the @catch fallback

    def task_pre_step(self, step_name, task_datastore, metadata, run_id, task_id, flow,
                      graph, retry_count, max_user_code_retries, ubf_context, inputs):
        self.metadata = metadata
        self.task_datastore = task_datastore
        if SANDBOX_MARKER not in os.environ:
            return
        fields = {
            "modal-sandbox-id": os.environ.get("MODAL_SANDBOX_ID"),
            "modal-task-id": os.environ.get("MODAL_TASK_ID"),
            "modal-gpu": os.environ.get("MODAL_GPU"),
        }
        entries = [
            MetaDatum(field=name, value=value, type=name,
                      tags=["attempt_id:%d" % retry_count])
            for name, value in fields.items() if value
        ]
        if entries:
            metadata.register_metadata(run_id, step_name, task_id, entries)

    def task_finished(self, step_name, flow, graph, is_task_ok, retry_count,
                      max_user_code_retries):
        # With local metadata, the sandbox's .metaflow directory goes to the
        # datastore, and the engine copies it into the launching machine's.
        if SANDBOX_MARKER in os.environ and getattr(self, "metadata", None) is not None \
                and self.metadata.TYPE == "local":
            sync_local_metadata_to_datastore(DATASTORE_LOCAL_DIR, self.task_datastore)


def _number(value):
    """Return value as a finite float when it is a number or a numeric string, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _user_values(deco):
    """Return the attributes a user set on a decorator, without its defaults."""
    user_set = getattr(deco, "_user_defined_attributes", None)
    if user_set is None:
        return {k: v for k, v in deco.attributes.items() if v is not None}
    return {k: deco.attributes[k] for k in user_set if deco.attributes.get(k) is not None}
