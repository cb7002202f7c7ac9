"""Drive sandboxes with Modal's Python SDK, as the benchmarks' point of
comparison.  Run in a fresh process:

    python sdk_sandboxes.py one              one sandbox that prints a line
    python sdk_sandboxes.py fanout N LINES P N sandboxes printing LINES lines,
                                             at most P at once (asyncio)

The environment points the SDK at the server (MODAL_SERVER_URL and tokens).
It prints the number of output lines it read."""

import asyncio
import sys

import modal

IMAGE_TAG = "python:3.11-slim"


def one():
    app = modal.App.lookup("mfmodal-bench", create_if_missing=True)
    image = modal.Image.from_registry(IMAGE_TAG)
    sb = modal.Sandbox.create("bash", "-c", "echo hello", app=app, image=image, timeout=600)
    lines = sum(1 for _ in sb.stdout)
    sb.wait()
    print(lines)
    return 0 if sb.returncode == 0 else 1


async def fanout(n, lines, parallel):
    app = await modal.App.lookup.aio("mfmodal-bench", create_if_missing=True)
    image = modal.Image.from_registry(IMAGE_TAG)
    command = f"for i in $(seq 1 {lines}); do echo line $i; done"
    gate = asyncio.Semaphore(parallel)
    failures = 0

    async def run_one(i):
        nonlocal failures
        async with gate:
            sb = await modal.Sandbox.create.aio("bash", "-c", command, app=app,
                                                image=image, timeout=600)
            count = 0
            async for _ in sb.stdout:
                count += 1
            await sb.wait.aio()
            if sb.returncode != 0:
                failures += 1
            return count

    counts = await asyncio.gather(*(run_one(i) for i in range(n)))
    print(sum(counts))
    return 1 if failures else 0


def main(argv):
    if argv[1] == "one":
        return one()
    return asyncio.run(fanout(int(argv[2]), int(argv[3]), int(argv[4])))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
