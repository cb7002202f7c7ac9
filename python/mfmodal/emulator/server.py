"""The emulator: its registries, the gRPC server, the control server, start and stop."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from .catalog import Catalog
from .control import ControlServer
from .faults import FaultSet
from .h2transport import ConnectionHub, EmulatorHandler, EmulatorProtocol
from .images import ImageStore
from .sandboxes import SandboxManager
from .secretstore import SecretStore, load_secrets_file
from .servicer import ModalServicer
from .state import StateStore
from .status_details import RPCStatusCodec

log = logging.getLogger(__name__)

DEFAULT_IMAGE_BUILDER_VERSION = "2025.06"
DEFAULT_LIST_PAGE_SIZE = 20
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class EmulatorConfig:
    state_dir: str
    host: str = "127.0.0.1"
    port: int = 0
    control_port: int = 0
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    # Accepted token id -> secret. Empty means any non-empty pair is accepted.
    tokens: Dict[str, str] = field(default_factory=dict)
    secrets_file: Optional[str] = None
    faults: List[Any] = field(default_factory=list)
    image_builder_version: str = DEFAULT_IMAGE_BUILDER_VERSION
    list_page_size: int = DEFAULT_LIST_PAGE_SIZE


class EmulatorGrpcServer(Server):
    """grpclib's Server with the emulator's connection and request handlers."""

    def __init__(self, handlers: List[Any], *, hub: ConnectionHub, **kwargs: Any) -> None:
        super().__init__(handlers, **kwargs)
        self._hub = hub

    def _protocol_factory(self) -> EmulatorProtocol:
        self.__gc_step__()
        handler = EmulatorHandler(self._mapping, self._codec, self._status_details_codec, self.__dispatch__,
                                  hub=self._hub)
        self._handlers.add(handler)
        return EmulatorProtocol(handler, self._config, self._h2_config, self._hub)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {_url_host(host)}:{port}: {exc.strerror or exc}") from None


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.state_dir = os.path.abspath(config.state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.started_at = time.time()
        self.url: Optional[str] = None
        self.control_url: Optional[str] = None

        self.catalog = Catalog()
        named = load_secrets_file(config.secrets_file) if config.secrets_file else {}
        self.secrets = SecretStore(named)
        self.faults = FaultSet()
        self.images = ImageStore(self.changed)
        self.sandboxes = SandboxManager(self.changed)
        self.state = StateStore(self.state_dir, self.snapshot)
        self.hub = ConnectionHub(self.faults, self.state.record_call)
        self.faults.listeners.append(self.changed)
        for spec in config.faults:
            self.faults.add(spec)

        self._grpc_server: Optional[EmulatorGrpcServer] = None
        self._control: Optional[ControlServer] = None

    def changed(self) -> None:
        self.state.changed()

    def check_auth(self, metadata: Dict[str, str]) -> None:
        """Raise UNAUTHENTICATED unless the request carries an accepted token pair."""
        token_id = metadata.get("x-modal-token-id", "")
        token_secret = metadata.get("x-modal-token-secret", "")
        if not token_id:
            raise GRPCError(Status.UNAUTHENTICATED,
                            "missing token: the request has no x-modal-token-id metadata; set MODAL_TOKEN_ID")
        if not token_secret:
            raise GRPCError(Status.UNAUTHENTICATED,
                            "missing token: the request has no x-modal-token-secret metadata; set MODAL_TOKEN_SECRET")
        if not self.config.tokens:
            return
        expected = self.config.tokens.get(token_id)
        if expected is None or not hmac.compare_digest(expected.encode(), token_secret.encode()):
            raise GRPCError(Status.UNAUTHENTICATED,
                            f"invalid token: token id {token_id!r} is unknown or its secret does not match")

    def base_environment(self, home: str, tmpdir: str) -> Dict[str, str]:
        """Return the environment every sandbox starts from, before secrets are applied.

        The emulator's own interpreter comes first on PATH, so a sandbox's
        ``python`` has the same packages as the emulator (images are not pulled).
        """
        host_path = os.environ.get("PATH") or DEFAULT_PATH
        return {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + host_path,
            "HOME": home,
            "LANG": "C.UTF-8",
            "TMPDIR": tmpdir,
        }

    def snapshot(self) -> Dict[str, Any]:
        return {
            "emulator": {
                "url": self.url,
                "control_url": self.control_url,
                "pid": os.getpid(),
                "started_at": self.started_at,
                "state_dir": self.state_dir,
                "image_builder_version": self.config.image_builder_version,
                "tokens_configured": len(self.config.tokens),
            },
            **self.catalog.to_json(),
            "secrets": self.secrets.to_json(),
            "images": self.images.to_json(),
            "sandboxes": self.sandboxes.to_json(),
            "sandboxes_alive": self.sandboxes.alive,
            "max_sandboxes_alive": self.sandboxes.max_alive,
            **self.state.counters_json(),
            "connections": self.hub.to_json(),
            "faults": self.faults.to_json(),
        }

    def _ssl_context(self) -> Optional[ssl.SSLContext]:
        if not self.config.tls_cert:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot load TLS certificate {self.config.tls_cert} and key "
                                     f"{self.config.tls_key}: {exc.strerror or exc}") from None
        context.set_alpn_protocols(["h2"])
        return context

    async def start(self) -> None:
        ssl_context = self._ssl_context()
        server = EmulatorGrpcServer([ModalServicer(self)], hub=self.hub, status_details_codec=RPCStatusCodec())
        sock = _bind(self.config.host, self.config.port)
        port = sock.getsockname()[1]
        await server.start(sock=sock, ssl=ssl_context)
        self._grpc_server = server
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://{_url_host(self.config.host)}:{port}"

        self._control = ControlServer(self)
        control_port = await self._control.start(_bind(self.config.host, self.config.control_port))
        self.control_url = f"http://{_url_host(self.config.host)}:{control_port}"
        log.info("serving Modal's API on %s, control API on %s, state in %s", self.url, self.control_url,
                 self.state.path)
        self.changed()
        self.state.flush()

    async def stop(self) -> None:
        """Stop serving, kill every sandbox's process group and write the final state."""
        log.info("stopping: %d sandboxes still running", self.sandboxes.alive)
        if self._grpc_server is not None:
            self._grpc_server.close()
        if self._control is not None:
            self._control.close()
        self.images.cancel_builds()
        await self.sandboxes.stop_all()
        if self._grpc_server is not None:
            try:
                await asyncio.wait_for(self._grpc_server.wait_closed(), 5.0)
            except asyncio.TimeoutError:
                log.warning("some request handlers did not finish within 5 s of shutdown")
        self.state.write(self.snapshot())
        log.info("stopped")
