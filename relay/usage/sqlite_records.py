"""Row codec of ``usage_records``: ``UsageRecord`` ↔ columns (``relay.usage.sqlite_schema.RECORD_COLUMNS``), and the
statements every ledger write is made of (select, insert, update, delete), one record at a time or batched."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any

from relay.model import UsageRecord
from relay.store.sqlite import chunks, marks
from relay.usage.sqlite_schema import RECORD_COLUMNS

__all__ = ["record_of", "select_record", "put_record", "read_records", "put_records", "SELECT"]

_COLS = ", ".join(RECORD_COLUMNS)
SELECT = f"SELECT {_COLS} FROM usage_records"
_INSERT = f"INSERT INTO usage_records ({_COLS}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
_UPDATE = "UPDATE usage_records SET " + ", ".join(f"{c}=?" for c in RECORD_COLUMNS) + " WHERE tenant=? AND key=?"
_LABELS = RECORD_COLUMNS.index("labels")
_SUCCESS = RECORD_COLUMNS.index("success")


_FIELDS = attrgetter(*(f.name for f in fields(UsageRecord)))


def _values(r: UsageRecord, labels_json: dict[tuple, str] | None = None) -> tuple:
    """``usage_records`` column values of a record (labels as sorted-key JSON, success as 0/1). ``labels_json``
    memoises the JSON per label set (the records of a batch mostly share a few)."""
    v = list(_FIELDS(r))
    if labels_json is None:
        v[_LABELS] = json.dumps(r.labels, sort_keys=True, separators=(",", ":"))
    else:
        key = tuple(r.labels.items())
        try:
            text = labels_json.get(key)
        except TypeError:  # an unhashable label value: not memoised
            text = json.dumps(r.labels, sort_keys=True, separators=(",", ":"))
        if text is None:
            text = labels_json[key] = json.dumps(r.labels, sort_keys=True, separators=(",", ":"))
        v[_LABELS] = text
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


def read_records(conn: sqlite3.Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], UsageRecord]:
    """The stored records of ``(tenant, key)`` pairs (absent ones left out), read with ``key IN (…)`` queries on the
    ``(tenant, key)`` index, per tenant, ``IN_CHUNK`` keys at a time."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, key in keys:
        by_tenant.setdefault(tenant, []).append(key)
    out: dict[tuple[str, str], UsageRecord] = {}
    for tenant, ks in by_tenant.items():
        for part in chunks(ks):
            for row in conn.execute(SELECT + f" WHERE tenant=? AND key IN ({marks(part)})", (tenant, *part)):
                r = record_of(row)
                out[(r.tenant, r.key)] = r
    return out


def put_records(conn: sqlite3.Connection, changes: Iterable[tuple[UsageRecord | None, UsageRecord | None]]) -> None:
    """Apply many ``put_record`` changes of distinct keys with one ``executemany`` per statement (deletes, then
    updates, then inserts in the order given: the same rows and row ids as one ``put_record`` each)."""
    inserts, updates, deletes = [], [], []
    labels_json: dict[tuple, str] = {}
    for old, new in changes:
        if new is None:
            if old is not None:
                deletes.append((old.tenant, old.key))
        elif old is None:
            inserts.append(_values(new, labels_json))
        else:
            updates.append((*_values(new, labels_json), old.tenant, old.key))
    if deletes:
        conn.executemany("DELETE FROM usage_records WHERE tenant=? AND key=?", deletes)
    if updates:
        conn.executemany(_UPDATE, updates)
    if inserts:
        conn.executemany(_INSERT, inserts)
