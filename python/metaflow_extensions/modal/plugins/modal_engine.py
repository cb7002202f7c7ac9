"""Finding mfmodal-engine and handing a task attempt over to it."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from .modal_exception import ModalException

ENGINE_NAME = "mfmodal-engine"
ENGINE_VARIABLE = "MFMODAL_ENGINE"

# The engine releases whose job description this extension writes: the same
# major and minor version as this package (0.1.x).
REQUIRED_ENGINE_VERSION = (0, 1)

# `mfmodal-engine --version` returns at once, so this only bounds a hung binary.
VERSION_CHECK_TIMEOUT_SECS = 10

_VERSION_RE = re.compile(r"^mfmodal-engine (\d+)\.(\d+)\.(\d+)\s*$")

_INSTALL_HINT = (
    "Build and install it (./configure && make && make install in the mfmodal "
    "source tree), or set %s to the path of the program." % ENGINE_VARIABLE
)


def find_engine():
    """Return the path of mfmodal-engine: $MFMODAL_ENGINE, else the one on PATH."""
    configured = os.environ.get(ENGINE_VARIABLE)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise ModalException(
                "%s is set to %s, which is not an executable file. Set it to the "
                "path of the mfmodal-engine program, or unset it to use the one "
                "on PATH." % (ENGINE_VARIABLE, configured)
            )
        return configured
    found = shutil.which(ENGINE_NAME)
    if found is None:
        raise ModalException(
            "The @modal decorator needs the %s program, which is not on PATH. %s"
            % (ENGINE_NAME, _INSTALL_HINT)
        )
    return found


def check_engine_version(engine):
    """Raise ModalException unless engine is a release this extension supports."""
    try:
        result = subprocess.run(
            [engine, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_CHECK_TIMEOUT_SECS,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModalException(
            "Could not run %s --version: %s. %s" % (engine, exc, _INSTALL_HINT)
        )
    match = _VERSION_RE.match(result.stdout.strip())
    if result.returncode != 0 or match is None:
        raise ModalException(
            "%s --version printed %r (exit status %d), not a mfmodal-engine "
            "version. %s"
            % (engine, result.stdout.strip(), result.returncode, _INSTALL_HINT)
        )
    version = tuple(int(part) for part in match.groups())
    if version[:2] != REQUIRED_ENGINE_VERSION:
        raise ModalException(
            "%s is version %s, but this @modal extension needs version %d.%d.x. "
            "Install the mfmodal-engine of the same mfmodal release, or set %s "
            "to its path."
            % (engine, ".".join(map(str, version)), REQUIRED_ENGINE_VERSION[0],
               REQUIRED_ENGINE_VERSION[1], ENGINE_VARIABLE)
        )
    return version


def exec_engine(engine, job, env):
    """Replace this process with `mfmodal-engine run --job -` for job.

    The job description goes to the engine's standard input from an unlinked
    temporary file (mode 0600), because it may hold credentials and must
    appear neither on a command line nor in a file left behind.  The engine's
    exit status and output become this process's.  Never returns.
    """
    fd, path = tempfile.mkstemp(prefix="mfmodal-job-", suffix=".json")
    try:
        os.unlink(path)
        data = json.dumps(job).encode("utf-8")
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
    finally:
        os.close(fd)
    # exec discards Python's buffers, so anything printed so far must go out now.
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(engine, [engine, "run", "--job", "-"], env)
    except OSError as exc:
        raise ModalException("Could not start %s: %s. %s" % (engine, exc, _INSTALL_HINT))
