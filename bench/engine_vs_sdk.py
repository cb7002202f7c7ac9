"""Benchmark mfmodal-engine against Modal's Python SDK on the local emulator.

    python bench/engine_vs_sdk.py --engine BUILD/mfmodal-engine
        [--jobs 500] [--lines 1000] [--parallel 64] [--reps 50]

Prints three tables: the cost of one task (one process each), a fan-out of
--jobs sandboxes printing --lines lines each (the engine's batch mode
against the SDK with asyncio), and the launch time of one task over --reps
repetitions on a fresh emulator.  CPU seconds and peak RSS are the client process's own, as GNU time
(/usr/bin/time) reports them; the emulator's cost is not counted."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

from mfmodal.emulator.testing import EmulatorProcess  # noqa: E402

IMAGE = {"registry": "python:3.11-slim"}


def measure(argv, env, stdin=None):
    """Run argv; return (wall seconds, CPU seconds, peak RSS MiB, exit status).

    GNU time starts the program and reports its peak RSS: the rusage of a
    child forked straight from this Python process would count this
    process's memory in the child's peak RSS, from before the exec.  The CPU
    time includes GNU time's own, under a millisecond."""
    with tempfile.NamedTemporaryFile("r") as report:
        start = time.monotonic()
        proc = subprocess.Popen(["/usr/bin/time", "-q", "-o", report.name, "-f", "%M"] + argv,
                                env=env, stdin=subprocess.PIPE if stdin else None,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if stdin:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        # wait4() counts GNU time and the program it waited for, to the
        # microsecond; GNU time's own %U and %S have 10 ms steps.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        rss_kib = report.read().split()[-1]
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, int(rss_kib) / 1024, os.waitstatus_to_exitcode(status)


def engine_env(emu):
    env = emu.sdk_env()
    env["MFMODAL_LOG_LEVEL"] = "warn"
    return env


def one_task(emu, engine):
    job = json.dumps({"id": "one", "command": "echo hello", "image": IMAGE})
    e = measure([engine, "run", "--job", "-"], engine_env(emu), stdin=job)
    s = measure([sys.executable, os.path.join(HERE, "sdk_sandboxes.py"), "one"], emu.sdk_env())
    return e, s


def fanout(emu, engine, n, lines, parallel, workdir):
    command = f"for i in $(seq 1 {lines}); do echo line $i; done"
    jobs = [{"id": f"j{i}", "command": command, "image": IMAGE} for i in range(n)]
    path = os.path.join(workdir, "jobs.json")
    with open(path, "w") as f:
        json.dump(jobs, f)
    e = measure([engine, "--jobs", path, "--max-parallel", str(parallel),
                 "--results", os.path.join(workdir, "results.jsonl")], engine_env(emu))
    s = measure([sys.executable, os.path.join(HERE, "sdk_sandboxes.py"), "fanout",
                 str(n), str(lines), str(parallel)], emu.sdk_env())
    return e, s


def table(title, rows):
    print(f"\n{title}")
    print(f"| {'':34} | {'engine':>10} | {'SDK':>10} | {'SDK / engine':>12} |")
    print(f"|{'-' * 36}|{'-' * 12}|{'-' * 12}|{'-' * 14}|")
    for name, e, s in rows:
        ratio = s / e if e > 0 else float("inf")
        print(f"| {name:34} | {e:10.3f} | {s:10.3f} | {ratio:12.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True, help="path of mfmodal-engine")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        emu = EmulatorProcess(os.path.join(workdir, "emulator"),
                              extra_args=["--log-level", "warning"]).start()
        try:
            (ew, ec, er, estat), (sw, sc, sr, sstat) = one_task(emu, args.engine)
            assert estat == 0, estat
            assert sstat == 0, sstat
            table("One task that prints one line (one process each)", [
                ("wall time (s)", ew, sw), ("client CPU (s)", ec, sc),
                ("client peak RSS (MiB)", er, sr)])

            (ew, ec, er, estat), (sw, sc, sr, sstat) = fanout(
                emu, args.engine, args.jobs, args.lines, args.parallel, workdir)
            assert estat == 0, estat
            assert sstat == 0, sstat
            table(f"Fan-out: {args.jobs} sandboxes x {args.lines} lines, "
                  f"{args.parallel} at once", [
                ("wall time (s)", ew, sw), ("client CPU (s)", ec, sc),
                ("client CPU per sandbox (ms)", ec / args.jobs * 1000, sc / args.jobs * 1000),
                ("client peak RSS (MiB)", er, sr)])
        finally:
            emu.stop()

        # A fresh emulator, because after the fan-out its state contains every
        # sandbox and each call costs it more.
        emu = EmulatorProcess(os.path.join(workdir, "emulator-launch"),
                              extra_args=["--log-level", "warning"]).start()
        try:
            engine_walls, sdk_walls = [], []
            for _ in range(args.reps):
                (e, _, _, _), (s, _, _, _) = one_task(emu, args.engine)
                engine_walls.append(e)
                sdk_walls.append(s)

            def spread(values):
                q = statistics.quantiles(values, n=4)
                return f"{statistics.median(values):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})"
            print(f"\nLaunch to exit of one task, {args.reps} repetitions (seconds)")
            print(f"| engine median | {spread(engine_walls)} |")
            print(f"| SDK median    | {spread(sdk_walls)} |")
            print(f"| SDK / engine  | {statistics.median(sdk_walls) / statistics.median(engine_walls):.1f} |")
        finally:
            emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
