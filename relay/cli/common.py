"""Helpers shared by the ``relay`` subcommands: loading the config file or exiting with its problems; the HTTP
client for the commands that ask Langfuse themselves (``check --probe``, ``report``'s links)."""

from __future__ import annotations

import ssl
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

    from relay.config_load import RelayConfig
    from relay.config_security import TLSClientConfig

__all__ = ["langfuse_session", "load_or_exit", "report_problems", "tls_hint"]


def load_or_exit(path: str | None, *, need_receivers: bool = True) -> RelayConfig:
    """The validated config at ``path`` (bundled defaults when None). On problems, prints them to stderr and raises
    ``SystemExit(2)``. ``need_receivers=False`` skips receiver secrets (commands that only read local state)."""
    from relay.config_load import ConfigError, load_config

    try:
        return load_config(path, need_receivers=need_receivers)
    except ConfigError as e:
        raise SystemExit(report_problems(e.problems)) from None


def report_problems(problems: list[str]) -> int:
    """Print config ``problems`` to stderr, one per line; returns exit code 2."""
    print(
        f"relay: invalid configuration ({len(problems)} problem{'s' if len(problems) != 1 else ''}):", file=sys.stderr
    )
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    return 2


def langfuse_session(tls: TLSClientConfig, timeout: float) -> aiohttp.ClientSession:
    """An HTTP client for Langfuse with the exporter's outbound TLS (``exporters.langfuse.tls``: a private CA, a
    client certificate; ``relay.tls.client_ssl_context``) and a ``timeout`` in seconds for the whole request.
    Raises ``OSError`` / ``ssl.SSLError`` when the TLS files cannot be read. Use it as ``async with``."""
    import aiohttp

    from relay.tls import client_ssl_context

    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout), connector=aiohttp.TCPConnector(ssl=client_ssl_context(tls))
    )


def tls_hint(e: BaseException) -> str:
    """What to do about ``e`` when it is an untrusted server certificate (aiohttp's
    ``ClientConnectorCertificateError`` is an ``ssl.SSLCertVerificationError``), else ""."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return (
            ": the server's certificate is not trusted — for a Langfuse behind a private CA, set "
            "exporters.langfuse.tls.ca_file to that CA's certificate (PEM)"
        )
    return ""
