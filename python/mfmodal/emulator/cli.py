"""Command line entry point: ``mfmodal-emulator`` and ``python -m mfmodal.emulator``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import List, Optional

from .faults import FaultSpecError
from .secretstore import SecretsFileError
from .server import DEFAULT_IMAGE_BUILDER_VERSION, DEFAULT_LIST_PAGE_SIZE, Emulator, EmulatorConfig

log = logging.getLogger("mfmodal.emulator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfmodal-emulator",
        description="Serve Modal's gRPC API on a local port and run sandboxes as local processes. "
                    "Prints the API URL, then the control API URL, one per line on stdout.",
    )

    parser.add_argument("--state-dir", required=True,
                        help="directory for state.json and the sandboxes' working directories (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="gRPC port; 0 picks a free one (default: 0)")
    parser.add_argument("--control-port", type=int, default=0,
                        help="port of the JSON control API; 0 picks a free one (default: 0)")

    parser.add_argument("--tls-cert", help="PEM certificate chain; with --tls-key, serve TLS with ALPN h2")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")

    parser.add_argument("--token-id", action="append", default=[],
                        help="accepted token id; repeat together with --token-secret. "
                             "Without any, every non-empty token pair is accepted")
    parser.add_argument("--token-secret", action="append", default=[],
                        help="secret of the --token-id at the same position")

    parser.add_argument("--secrets-file",
                        help='JSON file of named secrets: {"name": {"KEY": "value", ...}, ...}')
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC",
                        help="fault to inject from the start, e.g. error:method=SandboxCreate,calls=1,"
                             "status=UNAVAILABLE (see doc/emulator.md); repeatable")

    parser.add_argument("--image-builder-version", default=DEFAULT_IMAGE_BUILDER_VERSION,
                        help=f"image builder version reported by EnvironmentGetOrCreate "
                             f"(default: {DEFAULT_IMAGE_BUILDER_VERSION})")
    parser.add_argument("--list-page-size", type=int, default=DEFAULT_LIST_PAGE_SIZE,
                        help=f"sandboxes per SandboxList page (default: {DEFAULT_LIST_PAGE_SIZE})")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="log level of the messages on stderr (default: info)")
    return parser


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> EmulatorConfig:
    if len(args.token_id) != len(args.token_secret):
        parser.error(f"got {len(args.token_id)} --token-id and {len(args.token_secret)} --token-secret; "
                     "give them in pairs")
    if any(not value for value in args.token_id + args.token_secret):
        parser.error("--token-id and --token-secret must not be empty")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key must be given together")
    if args.list_page_size < 1:
        parser.error("--list-page-size must be at least 1")
    return EmulatorConfig(
        state_dir=args.state_dir,
        host=args.host,
        port=args.port,
        control_port=args.control_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tokens=dict(zip(args.token_id, args.token_secret)),
        secrets_file=args.secrets_file,
        faults=list(args.fault),
        image_builder_version=args.image_builder_version,
        list_page_size=args.list_page_size,
    )


async def serve(config: EmulatorConfig) -> None:
    emulator = Emulator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await emulator.start()
    print(emulator.url, flush=True)
    print(f"control {emulator.control_url}", flush=True)
    await stop.wait()
    log.info("received a stop signal")
    await emulator.stop()


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # grpclib logs every cancelled long poll at INFO, and at DEBUG hpack and h2 log every
    # header, token secrets included. Keep those libraries to warnings and above.
    for name in ("grpclib", "hpack", "h2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    config = config_from_args(parser, args)
    try:
        asyncio.run(serve(config))
    except (FaultSpecError, SecretsFileError, OSError) as exc:
        print(f"mfmodal-emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
