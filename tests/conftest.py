"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from relay.store.sqlite import SqliteDB


@pytest.fixture
def db(tmp_path):
    """An open :class:`SqliteDB` (relay's database: one writer thread, WAL) in ``tmp_path``; closed afterwards."""
    d = SqliteDB(tmp_path / "relay.db")
    d.open()
    yield d
    d.close()


#: Test modules whose async tests run on both event loops relay can run on (``service.event_loop``): asyncio's own
#: and uvloop, the daemon's default — the receivers' sockets, TLS and thread hand-offs are where loops differ.
_BOTH_LOOPS = frozenset({"tests.test_tls", "tests.test_http_receiver", "tests.test_grpc_receiver"})


def pytest_asyncio_loop_factories(config, item):
    """pytest-asyncio's hook: the loops an async test runs on (one test per loop; one loop keeps the test's name)."""
    import asyncio

    if item.module is None or item.module.__name__ not in _BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
