"""`python flow.py modal step ...`: the per-attempt process that hands a task
to mfmodal-engine.

Metaflow's runtime starts this command in place of `step` for each attempt of
a @modal step (see ModalDecorator.runtime_step_cli).  It rebuilds the task's
own `step` command line, wraps it in the sandbox script, writes the job
description and replaces itself with `mfmodal-engine run --job -`, so the
runtime reads the engine's output and exit status directly.
"""

import os
import sys
import time

from metaflow import util
from metaflow._vendor import click
from metaflow.exception import METAFLOW_EXIT_DISALLOW_RETRY
from metaflow.metaflow_config import MODAL_FORWARD_AWS_CREDENTIALS, S3_ENDPOINT_URL
from metaflow.plugins.datastores.local_storage import LocalStorage
from metaflow.unbounded_foreach import UBF_CONTROL, UBF_TASK

from .modal_engine import exec_engine, find_engine
from .modal_exception import ModalException
from .modal_job import build_job, remote_command, sandbox_environment, split_input_paths


@click.group()
def cli():
    pass


@cli.group(help="Commands related to Modal.")
def modal():
    pass


@modal.command(
    help="Run one attempt of a task in a Modal sandbox through mfmodal-engine. "
    "Metaflow's runtime calls this command for steps decorated with @modal, "
    "so it is not meant to be called directly."
)
@click.argument("step-name")
@click.argument("code-package-metadata")
@click.argument("code-package-sha")
@click.argument("code-package-url")
@click.option(
    "--package-path",
    default=None,
    help="Local file of the code package, uploaded by mfmodal-engine when the "
    "datastore does not have it yet.",
)
@click.option("--run-id", help="Passed to the top-level 'step'.")
@click.option("--task-id", help="Passed to the top-level 'step'.")
@click.option("--input-paths", help="Passed to the top-level 'step'.")
@click.option("--split-index", help="Passed to the top-level 'step'.")
@click.option("--clone-path", help="Passed to the top-level 'step'.")
@click.option("--clone-run-id", help="Passed to the top-level 'step'.")
@click.option("--tag", multiple=True, default=None, help="Passed to the top-level 'step'.")
@click.option("--namespace", default=None, help="Passed to the top-level 'step'.")
@click.option("--retry-count", default=0, help="Passed to the top-level 'step'.")
@click.option("--max-user-code-retries", default=0, help="Passed to the top-level 'step'.")
@click.option(
    "--ubf-context",
    default=None,
    type=click.Choice(["none", UBF_CONTROL, UBF_TASK]),
    help="Accepted because Metaflow's runtime always sends it, but not passed on.",
)
@click.pass_context
def step(ctx, step_name, code_package_metadata, code_package_sha, code_package_url,
         package_path=None, **kwargs):
    try:
        engine = find_engine()
        _sleep_before_retry(ctx, step_name, int(kwargs["retry_count"]))
        job = _job_for_attempt(ctx, step_name, code_package_metadata, code_package_sha,
                               code_package_url, package_path, kwargs)
        exec_engine(engine, job, _engine_environment())
    except ModalException as exc:
        # A configuration problem: another attempt would fail the same way.
        ctx.obj.echo_always("%s: %s" % (exc.headline, exc), err=True)
        sys.exit(METAFLOW_EXIT_DISALLOW_RETRY)


def _modal_decorator(node):
    for deco in node.decorators:
        if deco.name == "modal":
            return deco
    raise ModalException(
        "step *%s* has no @modal decorator, so `modal step` cannot run it." % node.name
    )


def _sleep_before_retry(ctx, step_name, retry_count):
    """Honour @retry(minutes_between_retries=...) before a new sandbox starts.

    Metaflow's runtime restarts a failed task at once. The launchers of
    @batch and @kubernetes wait here, and so does this one.
    """
    if retry_count == 0:
        return
    retry = [deco for deco in ctx.obj.graph[step_name].decorators if deco.name == "retry"]
    if not retry:
        return
    minutes = int(retry[0].attributes.get("minutes_between_retries", 0) or 0)
    if minutes > 0:
        ctx.obj.echo_always(
            "Waiting %d minute(s) before attempt %d of step %s (@retry's "
            "minutes_between_retries)." % (minutes, retry_count, step_name),
            err=True,
        )
        time.sleep(minutes * 60)


def _job_for_attempt(ctx, step_name, code_package_metadata, code_package_sha,
                     code_package_url, package_path, options):
    node = ctx.obj.graph[step_name]
    deco = _modal_decorator(node)
    flow_filename = os.path.basename(sys.argv[0])

    # The task's own `step` command, as Metaflow's runtime would have run it
    # locally. Only the interpreter and where the input paths live differ.
    options = dict(options)
    options.pop("ubf_context", None)
    input_path_chunks = None
    if options.get("input_paths"):
        options["input_paths"], input_path_chunks = split_input_paths(
            options["input_paths"])
    executable = ctx.obj.environment.executable(step_name)
    step_command = "%s -u %s %s step %s %s" % (
        executable,
        flow_filename,
        " ".join(util.dict_to_cli_options(ctx.parent.parent.params)),
        step_name,
        " ".join(util.dict_to_cli_options(options)),
    )
    command = remote_command(
        code_package_url,
        code_package_metadata,
        step_command,
        ctx.obj.environment.bootstrap_commands(step_name, "s3"),
    )

    task = {
        "flow": ctx.obj.flow.name,
        "run": options["run_id"],
        "step": step_name,
        "task": options["task_id"],
        "attempt": int(options["retry_count"]),
    }
    step_env = {}
    for other in node.decorators:
        if other.name == "environment":
            step_env.update({k: str(v) for k, v in other.attributes["vars"].items()})
    env = sandbox_environment(
        task,
        {"url": code_package_url, "sha": code_package_sha,
         "metadata": code_package_metadata},
        util.get_username(),
        flow_filename,
        step_env,
        deco.env,
        credentials=_aws_settings(),
        input_path_chunks=input_path_chunks,
    )

    metadata_dir = None
    if ctx.obj.metadata.TYPE == "local":
        metadata_dir = LocalStorage.get_datastore_root_from_config(
            lambda *args, **kwargs: None, create_on_absent=True)
    resources = {
        "cpu": deco.attributes["cpu"],
        "memory": deco.attributes["memory"],
        "gpu": deco.attributes["gpu"],
        "image": deco.image,
        "timeout": deco.attributes["timeout"],
    }
    return build_job(task, command, resources, env, deco.secrets, code_package_url,
                     package_path, ctx.obj.flow_datastore.datastore_root, metadata_dir)


def _aws_settings():
    """Return the AWS region, plus this machine's credentials when forwarding is on."""
    settings = {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not MODAL_FORWARD_AWS_CREDENTIALS:
        if region:
            settings["AWS_DEFAULT_REGION"] = region
        return settings

    import boto3

    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise ModalException(
            "METAFLOW_MODAL_FORWARD_AWS_CREDENTIALS is on, but boto3 finds no AWS "
            "credentials on this machine. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or turn forwarding off and "
            "name a Modal secret with the credentials in @modal(secrets=[...])."
        )
    frozen = credentials.get_frozen_credentials()
    settings["AWS_ACCESS_KEY_ID"] = frozen.access_key
    settings["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
    if frozen.token:
        settings["AWS_SESSION_TOKEN"] = frozen.token
    region = region or session.region_name
    if region:
        settings["AWS_DEFAULT_REGION"] = region
    return settings


def _engine_environment():
    """Return the engine's environment: this one, plus Metaflow's S3 endpoint.

    The engine reads the endpoint from METAFLOW_S3_ENDPOINT_URL only, while
    Metaflow may have it from its configuration file.
    """
    env = dict(os.environ)
    if S3_ENDPOINT_URL and not env.get("METAFLOW_S3_ENDPOINT_URL"):
        env["METAFLOW_S3_ENDPOINT_URL"] = S3_ENDPOINT_URL
    return env
