"""The HTTP client session of one notifier integration (Slack, Jira, webhook): aiohttp, opened lazily."""

from __future__ import annotations

import aiohttp

from relay.config_security import TLSClientConfig
from relay.tls import client_ssl_context

__all__ = ["LazySession"]


class LazySession:
    """An ``aiohttp.ClientSession`` opened on first :meth:`get` (so inside the running event loop, which a session
    belongs to) and opened again after :meth:`close`: ``timeout`` in seconds for a whole request, outbound TLS from
    the integration's ``tls`` keys (``relay.tls.client_ssl_context``: a private CA, a client certificate), and
    ``headers`` sent with every request. Opening raises ``OSError`` / ``ssl.SSLError`` when the TLS files cannot be
    read."""

    def __init__(self, timeout: float, tls: TLSClientConfig, headers: dict[str, str] | None = None):
        self.timeout = timeout
        self.tls = tls
        self.headers = headers
        self._session: aiohttp.ClientSession | None = None

    @property
    def is_open(self) -> bool:
        """True while a session is open (the next :meth:`get` returns it)."""
        return self._session is not None and not self._session.closed

    def get(self) -> aiohttp.ClientSession:
        """The open session, opening a new one when there is none."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=client_ssl_context(self.tls)),
                headers=self.headers,
            )
        return self._session

    async def close(self) -> None:
        """Close the session (idempotent); the next :meth:`get` opens a new one."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
