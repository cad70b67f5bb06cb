"""What every fake service shares: an aiohttp server on loopback that can stop and come back on the same port
(outages), used as ``async with``, or served from its own event loop in a thread for subprocess tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

__all__ = ["LoopbackServer", "ThreadedServer", "hold_answer"]


async def hold_answer(request: web.Request, delay: float) -> None:
    """Wait up to ``delay`` seconds before answering ``request``, less when its client goes away meanwhile
    (gave up, was killed): the fake's "applied, but the answer is held back" fault."""
    loop = asyncio.get_running_loop()
    end = loop.time() + delay
    while loop.time() < end:
        if request.transport is None or request.transport.is_closing():
            return
        await asyncio.sleep(min(0.05, max(0.0, end - loop.time())))


class LoopbackServer:
    """Base of the fakes. A subclass sets ``host`` and ``port`` (0: pick a free port the first time) and builds
    its routes in :meth:`make_app`; ``runner_options`` are passed to ``web.AppRunner``."""

    host: str = "127.0.0.1"
    port: int = 0
    runner_options: dict[str, Any] = {"access_log": None, "shutdown_timeout": 0.5}
    #: Serve HTTPS with this context (e.g. a certificate from a private CA); ``base_url`` is then ``https://``.
    ssl_context: Any = None
    _runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        """The application with the fake's routes."""
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://localhost:PORT`` with ``ssl_context``)."""
        if self.ssl_context is not None:
            return f"https://localhost:{self.port}"
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        """True while listening."""
        return self._runner is not None

    async def start(self) -> Any:
        """Bind and serve (later starts reuse the port); returns self."""
        runner = web.AppRunner(self.make_app(), **self.runner_options)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context).start()
        self.port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Stop serving and close every open connection (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def restore(self) -> None:
        """End an outage: listen again on the same port (no-op if already up)."""
        if self._runner is None:
            await self.start()

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


class ThreadedServer:
    """A fake serving from its own event loop in a daemon thread. ``outage(...)``/``restore()`` block; every other
    attribute is the fake's own (its accessors and fault methods are thread-safe). Usable as ``with``."""

    def __init__(self, fake: LoopbackServer, name: str = "fake"):
        self.fake = fake
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._call(fake.start())

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def base_url(self) -> str:
        """The fake's base URL."""
        return self.fake.base_url

    def outage(self, *args: Any, **kwargs: Any) -> None:
        """Blocking form of the fake's ``outage``."""
        self._call(self.fake.outage(*args, **kwargs))  # type: ignore[attr-defined]

    def restore(self) -> None:
        """Blocking form of the fake's ``restore``."""
        self._call(self.fake.restore())

    def stop(self) -> None:
        """Stop the server, the loop and the thread (idempotent)."""
        if self._loop.is_running():
            self._call(self.fake.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
