"""Row codec of ``usage_records``: ``UsageRecord`` ↔ columns (``relay.usage.sqlite_schema.RECORD_COLUMNS``), and the
three statements every ledger write is made of (select one, insert/update/delete one)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from relay.model import UsageRecord
from relay.usage.sqlite_schema import RECORD_COLUMNS

__all__ = ["record_of", "select_record", "put_record", "SELECT"]

_COLS = ", ".join(RECORD_COLUMNS)
SELECT = f"SELECT {_COLS} FROM usage_records"
_INSERT = f"INSERT INTO usage_records ({_COLS}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
_UPDATE = "UPDATE usage_records SET " + ", ".join(f"{c}=?" for c in RECORD_COLUMNS) + " WHERE tenant=? AND key=?"
_LABELS = RECORD_COLUMNS.index("labels")
_SUCCESS = RECORD_COLUMNS.index("success")


def _values(r: UsageRecord) -> tuple:
    """``usage_records`` column values of a record (labels as sorted-key JSON, success as 0/1)."""
    v = [r.__dict__[f] for f in r.__dataclass_fields__]
    v[_LABELS] = json.dumps(r.labels, sort_keys=True, separators=(",", ":"))
    v[_SUCCESS] = int(r.success)
    return tuple(v)


def record_of(row: Sequence, labels_cache: dict[str, dict[str, str]] | None = None) -> UsageRecord:
    """A ``UsageRecord`` from a ``usage_records`` row in ``RECORD_COLUMNS`` order. ``labels_cache`` maps label JSON
    to parsed dicts so a scan parses each distinct label set once (each record still gets its own dict)."""
    raw = row[_LABELS]
    if labels_cache is None:
        labels = json.loads(raw)
    else:
        parsed = labels_cache.get(raw)
        if parsed is None:
            parsed = labels_cache[raw] = json.loads(raw)
        labels = dict(parsed)
    fields: tuple[Any, ...] = (
        *row[:_LABELS],
        labels,
        *row[_LABELS + 1 : _SUCCESS],
        bool(row[_SUCCESS]),
        *row[_SUCCESS + 1 :],
    )
    return UsageRecord(*fields)


def select_record(conn: sqlite3.Connection, tenant: str, key: str) -> UsageRecord | None:
    """The stored record ``(tenant, key)`` or None."""
    row = conn.execute(SELECT + " WHERE tenant=? AND key=?", (tenant, key)).fetchone()
    return None if row is None else record_of(row)


def put_record(conn: sqlite3.Connection, old: UsageRecord | None, new: UsageRecord | None) -> None:
    """Apply one change to ``usage_records``: insert, update (same key) or delete."""
    if new is None:
        if old is not None:
            conn.execute("DELETE FROM usage_records WHERE tenant=? AND key=?", (old.tenant, old.key))
    elif old is None:
        conn.execute(_INSERT, _values(new))
    else:
        conn.execute(_UPDATE, (*_values(new), old.tenant, old.key))
