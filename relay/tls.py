"""TLS and mTLS for relay's listeners (OTLP/HTTP, OTLP/gRPC, admin) and its outbound HTTP clients, configured with
the OpenTelemetry Collector's ``configtls`` keys (``relay.config_security.TLSServerConfig`` / ``TLSClientConfig``,
https://github.com/open-telemetry/opentelemetry-collector/blob/main/config/configtls/README.md).

Certificate rotation without a restart: :class:`ReloadingServerTLS` checks the files' modification times at most
every ``reload_interval`` seconds (on the next handshake) and, when they changed, builds a new context:

- aiohttp listeners get one fixed :class:`ssl.SSLContext` whose ``sni_callback`` (run by OpenSSL for every
  ClientHello, with or without SNI) switches the connection to the current context
  (https://docs.python.org/3/library/ssl.html#ssl.SSLContext.sni_callback);
- gRPC listeners get ``grpc.dynamic_ssl_server_credentials`` whose fetcher gRPC calls before every handshake
  (https://grpc.github.io/grpc/python/grpc.html#grpc.dynamic_ssl_server_credentials). gRPC core enforces TLS 1.2 as
  its minimum; ``min_version: "1.3"`` applies to the HTTP listeners only (the gRPC receiver's config refuses it).

A file that cannot be read or parsed during a reload keeps the previous certificate (logged once per change).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time

import grpc
from aiohttp import web

from relay.config_security import TLSClientConfig, TLSServerConfig

__all__ = ["ReloadingServerTLS", "client_ssl_context", "serve"]

log = logging.getLogger(__name__)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class ReloadingServerTLS:
    """Server TLS material for one listener, re-read when the files change.

    Raises ``OSError`` / ``ssl.SSLError`` from the constructor when the initial files are missing or invalid (relay
    then refuses to start).
    """

    def __init__(self, config: TLSServerConfig):
        self.config = config
        self._lock = threading.Lock()
        self._files = [p for p in (config.cert_file, config.key_file, config.client_ca_file) if p]
        self._stamp = self._stamps()
        self._checked = time.monotonic()
        self._context = self._build_context()

    # ------------------------------------------------------------------ change detection

    def _stamps(self) -> tuple:
        out: list[tuple[int, int, int] | None] = []
        for p in self._files:
            try:
                st = os.stat(p)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def _changed(self) -> bool:
        """True (once) when the files changed since the last successful load; checks at most every
        ``reload_interval`` seconds (0 = never)."""
        interval = self.config.reload_interval
        if not interval:
            return False
        now = time.monotonic()
        with self._lock:
            if now - self._checked < interval:
                return False
            self._checked = now
            stamp = self._stamps()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            return True

    # ------------------------------------------------------------------ aiohttp (ssl module)

    def _build_context(self) -> ssl.SSLContext:
        cfg = self.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[cfg.min_version]
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if cfg.client_ca_file:
            ctx.load_verify_locations(cafile=cfg.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _current(self) -> ssl.SSLContext:
        if self._changed():
            try:
                self._context = self._build_context()
                log.info("TLS certificate reloaded from %s", self.config.cert_file)
            except (OSError, ssl.SSLError) as e:
                self._stamp = ()  # retry at the next check (e.g. the key was replaced before the certificate)
                log.error(
                    "TLS certificate reload from %s failed, keeping the previous one: %s", self.config.cert_file, e
                )
        return self._context

    def ssl_context(self) -> ssl.SSLContext:
        """A context for ``aiohttp.web.TCPSite(ssl_context=…)`` that always serves the current certificate."""
        front = self._build_context()

        def switch(sock: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
            sock.context = self._current()

        front.sni_callback = switch
        return front

    # ------------------------------------------------------------------ gRPC

    def _grpc_config(self) -> grpc.ServerCertificateConfiguration:
        cfg = self.config
        ca = _read(cfg.client_ca_file) if cfg.client_ca_file else None
        return grpc.ssl_server_certificate_configuration([(_read(cfg.key_file), _read(cfg.cert_file))], ca)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``server.add_secure_port`` that pick up changed files on the next handshake."""

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            if not self._changed():
                return None
            try:
                # validate the pair with the ssl module first: gRPC would fail every handshake on a bad pair
                self._build_context()
                new = self._grpc_config()
            except (OSError, ssl.SSLError) as e:
                self._stamp = ()  # retry at the next check
                log.error(
                    "TLS certificate reload from %s failed, keeping the previous one: %s", self.config.cert_file, e
                )
                return None
            log.info("TLS certificate reloaded from %s (gRPC)", self.config.cert_file)
            return new

        return grpc.dynamic_ssl_server_credentials(
            self._grpc_config(), fetch, require_client_authentication=bool(self.config.client_ca_file)
        )


def client_ssl_context(config: TLSClientConfig) -> ssl.SSLContext | bool:
    """The ``ssl`` argument for an aiohttp client: a context trusting ``ca_file`` (in addition to nothing else:
    a private CA) and presenting ``cert_file``/``key_file``; ``False`` (no verification) only with
    ``insecure_skip_verify``; ``True`` (system trust store) when nothing is configured."""
    if config.insecure_skip_verify:
        return False
    if not (config.ca_file or config.cert_file):
        return True
    ctx = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else ssl.create_default_context()
    if config.cert_file and config.key_file:
        ctx.load_cert_chain(config.cert_file, config.key_file)
    return ctx


async def serve(runner: web.AppRunner, host: str, port: int, tls: TLSServerConfig | None) -> int:
    """Set up ``runner`` and serve it on ``host:port`` (TLS with re-read certificates when ``tls`` is set); returns
    the bound port (``port`` 0 picks a free one). On failure the runner is cleaned up and the error raised
    (``OSError`` for an address in use)."""
    await runner.setup()
    try:
        ssl_context = ReloadingServerTLS(tls).ssl_context() if tls else None
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return int(runner.addresses[0][1])
