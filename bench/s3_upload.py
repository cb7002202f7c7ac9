#!/usr/bin/env python3
"""Benchmark a 1 GiB upload to a local moto S3 server: "mfmodal-engine s3 put"
against boto3's upload_file with its default TransferConfig.

Each upload runs in its own child process.  Wall time is measured around
it, and CPU seconds (user + system) and peak RSS come from the child's
rusage (os.wait4).  moto runs in a third process, and its CPU is not counted.  The
clients alternate, and the table shows the median of --runs uploads each.

    .venv/bin/python bench/s3_upload.py --engine BUILD/mfmodal-engine

--tls adds the same comparison over HTTPS (moto with a test certificate);
--sweep measures the engine alone over part sizes and parallelism, which is
how its defaults were chosen (see doc/benchmarks.md).

Each table ends with two "floor" rows: children that do only the work S3
requires of every client, with no HTTP or S3 at all.  The first hashes the
file (SHA-256 for the SigV4 payload hash over plain HTTP, CRC32 for the part
checksum over HTTPS).  The second also sends the file once over loopback
TCP, or TLS, to a sink that discards it.
"""

import argparse
import os
import random
import socket
import ssl
import threading
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024
# The clients compared; the second row shows what the part checksum costs.
CLIENTS = ("engine", "engine --checksum none", "boto3")
BOTO3_UPLOAD = """
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  verify=sys.argv[4] or None)
if sys.argv[2] != "-":
    s3.upload_file(sys.argv[2], "bench", sys.argv[3])
"""

FLOOR_SEND = """
import hashlib, socket, ssl, sys, zlib
path, port, ca_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "rb") as f:
    if ca_file:
        crc = 0
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    else:
        digest = hashlib.file_digest(f, "sha256")
if port == 0:
    sys.exit(0)
sock = socket.create_connection(("127.0.0.1", port))
with open(path, "rb") as f:
    if ca_file:
        ctx = ssl.create_default_context(cafile=ca_file)
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        while chunk := f.read(1 << 20):
            sock.sendall(chunk)
    else:
        sock.sendfile(f)
sock.close()
"""


class Sink:
    """A loopback server that reads and discards what each connection
    sends, over TLS when given a certificate."""

    def __init__(self, tls_files=None):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.ctx = None
        if tls_files:
            self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ctx.load_cert_chain(*tls_files)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.server.accept()
            if self.ctx:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            buf = bytearray(1 << 20)
            with conn:
                while conn.recv_into(buf):
                    pass


def floor(args, path, tls_files, ca_file):
    """Run --runs floor children of each kind; return two lists of
    (wall, CPU, RSS) rows: hashing only, then hashing and sending."""
    sink = Sink(tls_files)
    hash_rows, send_rows = [], []
    for _ in range(args.runs):
        for port, rows in ((0, hash_rows), (sink.port, send_rows)):
            rows.append(run_child([args.python, "-c", FLOOR_SEND, path, str(port),
                                   ca_file or ""], dict(os.environ)))
    sink.server.close()
    return hash_rows, send_rows


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(python, tls_files=None):
    port = free_port()
    args = [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    if tls_files:
        args += ["--ssl-cert", tls_files[0], "--ssl-key", tls_files[1]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("moto did not start")
            time.sleep(0.1)
    scheme = "https" if tls_files else "http"
    return proc, f"{scheme}://127.0.0.1:{port}"


def make_file(path, size):
    """size bytes, different in every MiB."""
    block = random.Random(0).randbytes(MIB)
    with open(path, "wb") as f:
        for index in range(0, size // MIB):
            f.write(index.to_bytes(8, "big") + block[8:])
        f.write(block[:size % MIB])


def run_child(argv, env):
    """Run argv; return (wall seconds, CPU seconds, peak RSS in MiB)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def client_env(endpoint, ca_file):
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_CONFIG_FILE": "/nonexistent"})
    if ca_file:
        env["MFMODAL_CA_FILE"] = ca_file
    return env


def delete_all(python, env):
    subprocess.run([python, "-c", (
        "import boto3, os\n"
        "s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'],"
        " verify=os.environ.get('MFMODAL_CA_FILE'))\n"
        "for o in s3.list_objects_v2(Bucket='bench').get('Contents', []):\n"
        "    s3.delete_object(Bucket='bench', Key=o['Key'])\n")],
        env=env, check=True)


def compare(args, endpoint, ca_file, path):
    env = client_env(endpoint, ca_file)
    subprocess.run([args.python, "-c", (
        "import boto3, os\n"
        "boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'],"
        " verify=os.environ.get('MFMODAL_CA_FILE')).create_bucket(Bucket='bench')\n")],
        env=env, check=True)
    results = {client: [] for client in CLIENTS}
    for run in range(args.runs):
        for client in CLIENTS:
            key = f"run-{run}"
            if client == "boto3":
                argv = [args.python, "-c", BOTO3_UPLOAD, endpoint, path, key, ca_file or ""]
            else:
                argv = [args.engine, "s3", "put", *client.split()[1:], path,
                        f"s3://bench/{key}"]
            results[client].append(run_child(argv, env))
            delete_all(args.python, env)
    startup = run_child([args.python, "-c", BOTO3_UPLOAD, endpoint, "-", "-", ca_file or ""],
                        env)
    return results, startup


def median(rows, index):
    return statistics.median(row[index] for row in rows)


def print_table(title, results, startup, size, floor_rows):
    gib = size / (1024 * MIB)
    print(f"\n{title} (median of {len(results['engine'])} runs)\n")
    print("| client | wall (s) | CPU user+sys (s) | CPU per GiB (s) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for client in CLIENTS:
        rows = results[client]
        print(f"| {client} | {median(rows, 0):.2f} | {median(rows, 1):.2f} | "
              f"{median(rows, 1) / gib:.2f} | {median(rows, 2):.0f} |")
    e, b = results["engine"], results["boto3"]
    print(f"| engine / boto3 | {median(e, 0) / median(b, 0):.2f} | "
          f"{median(e, 1) / median(b, 1):.2f} | {median(e, 1) / median(b, 1):.2f} | "
          f"{median(e, 2) / median(b, 2):.2f} |")
    for label, rows in zip(("floor: hash only", "floor: hash + send"), floor_rows):
        print(f"| {label} | {median(rows, 0):.2f} | {median(rows, 1):.2f} | "
              f"{median(rows, 1) / gib:.2f} | {median(rows, 2):.0f} |")
        print(f"| {label} / boto3 | | "
              f"{median(rows, 1) / median(b, 1):.2f} | | |")
    print(f"\nboto3's figures include starting Python and importing boto3, which "
          f"alone took {startup[1]:.2f} s CPU and {startup[2]:.0f} MiB here.  The "
          f"floor's include starting Python without boto3.  A quarter of "
          f"boto3's CPU, the target, is {median(b, 1) / 4:.2f} s.")


def sweep(args, endpoint, path):
    env = client_env(endpoint, None)
    subprocess.run([args.python, "-c", (
        "import boto3, os\n"
        "boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'])"
        ".create_bucket(Bucket='bench')\n")], env=env, check=True)
    print(f"\nEngine sweep (median of {args.runs} runs)\n")
    print("| part size (MiB) | parallel | wall (s) | CPU (s) | peak RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for part_size in (8, 16, 32, 64):
        for parallel in (2, 4, 8, 16):
            rows = []
            for run in range(args.runs):
                argv = [args.engine, "s3", "put", "--part-size", str(part_size),
                        "--parallel", str(parallel), path, f"s3://bench/sweep-{run}"]
                rows.append(run_child(argv, env))
                delete_all(args.python, env)
            print(f"| {part_size} | {parallel} | {median(rows, 0):.2f} | "
                  f"{median(rows, 1):.2f} | {median(rows, 2):.0f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", required=True, help="path of mfmodal-engine")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python with moto and boto3 (default: this one)")
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--runs", type=int, default=3, help="uploads per client")
    parser.add_argument("--tls", action="store_true", help="also compare over HTTPS")
    parser.add_argument("--sweep", action="store_true",
                        help="measure the engine over part sizes and parallelism")
    args = parser.parse_args()
    size = args.size_mib * MIB

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "upload.bin")
        make_file(path, size)
        print(f"{args.size_mib} MiB upload, {os.cpu_count()} CPUs; moto's own CPU "
              f"is not counted")
        proc, endpoint = start_moto(args.python)
        try:
            if args.sweep:
                sweep(args, endpoint, path)
            else:
                results, startup = compare(args, endpoint, None, path)
                print_table("Plain HTTP (engine: SHA-256 payload hash, reused "
                            "as the part checksum)", results, startup, size,
                            floor(args, path, None, None))
        finally:
            proc.terminate()
            proc.wait()
        if args.tls and not args.sweep:
            import trustme
            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1")
            ca_file = os.path.join(tmp, "ca.pem")
            cert_file = os.path.join(tmp, "cert.pem")
            key_file = os.path.join(tmp, "key.pem")
            ca.cert_pem.write_to_path(ca_file)
            cert.cert_chain_pems[0].write_to_path(cert_file)
            cert.private_key_pem.write_to_path(key_file)
            proc, endpoint = start_moto(args.python, (cert_file, key_file))
            try:
                results, startup = compare(args, endpoint, ca_file, path)
                print_table("HTTPS (engine: UNSIGNED-PAYLOAD + CRC32)", results,
                            startup, size,
                            floor(args, path, (cert_file, key_file), ca_file))
            finally:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
