"""Sweep mfmodal-engine's --max-parallel over a batch on the local emulator.

    python bench/max_parallel.py --engine BUILD/mfmodal-engine
        [--jobs 200] [--lines 1000] [--values 16,32,64,128] [--create-delay 0]

Each value gets a fresh emulator.  --create-delay makes the emulator wait
that many seconds before it responds to each SandboxCreate (its delay fault).
That stands in for the time a remote platform takes to schedule a sandbox,
which local processes do not need.  Prints the wall time, the engine's CPU seconds and its peak RSS
(from GNU time) for each value."""

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, HERE)

from engine_vs_sdk import IMAGE, engine_env, measure  # noqa: E402
from mfmodal.emulator.testing import EmulatorProcess  # noqa: E402


def run_batch(engine, value, args, workdir):
    faults = []
    if args.create_delay > 0:
        faults = ["--fault", f"delay:method=SandboxCreate,seconds={args.create_delay}"]
    emu = EmulatorProcess(os.path.join(workdir, f"emulator-{value}"),
                          extra_args=["--log-level", "warning"] + faults).start()
    try:
        command = f"for i in $(seq 1 {args.lines}); do echo line $i; done"
        jobs = [{"id": f"j{i}", "command": command, "image": IMAGE}
                for i in range(args.jobs)]
        path = os.path.join(workdir, "jobs.json")
        with open(path, "w") as f:
            json.dump(jobs, f)
        wall, cpu, rss, status = measure(
            [engine, "--jobs", path, "--max-parallel", str(value),
             "--results", os.path.join(workdir, f"results-{value}.jsonl")],
            engine_env(emu))
        if status != 0:
            raise SystemExit(f"--max-parallel {value}: the engine exited with {status}")
        return wall, cpu, rss
    finally:
        emu.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True, help="path of mfmodal-engine")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--values", default="16,32,64,128",
                        help="comma-separated --max-parallel values")
    parser.add_argument("--create-delay", type=float, default=0.0,
                        help="seconds the emulator waits before responding to each SandboxCreate")
    args = parser.parse_args()

    values = [int(v) for v in args.values.split(",")]
    print(f"{args.jobs} sandboxes x {args.lines} lines, SandboxCreate held "
          f"{args.create_delay:g} s\n")
    print("| --max-parallel | wall (s) | engine CPU (s) | engine peak RSS (MiB) |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as workdir:
        for value in values:
            wall, cpu, rss = run_batch(args.engine, value, args, workdir)
            print(f"| {value} | {wall:.2f} | {cpu:.2f} | {rss:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
