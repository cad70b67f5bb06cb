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
