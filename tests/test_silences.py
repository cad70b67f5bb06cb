"""Silences: states, muting, expiry by the clock, validation, in-place update vs replacement, persistence and
garbage collection; the HTTP API (Alertmanager v2 shapes) and ``relay silence`` against a real loopback server."""

from __future__ import annotations

import argparse
import asyncio
import socket
import time

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from relay.alerting.api import alerting_routes
from relay.alerting.config import AlertingConfig
from relay.alerting.dispatch.dispatcher import Dispatcher
from relay.alerting.dispatch.outbox import Outbox
from relay.alerting.dispatch.silences import SilenceError, Silences, SilenceState
from relay.cli import silence as silence_cli
from relay.matchers import Matcher
from relay.store.sqlite import SqliteDB

T0 = 1_780_000_000.0
TEAM_A = [Matcher("team", "=", "a")]


class Clock:
    """A settable clock (unix seconds); with ``t = None`` it follows the real clock."""

    def __init__(self, t: float | None = T0):
        self.t = t

    def __call__(self) -> float:
        return time.time() if self.t is None else self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def silences(db, clock):
    return Silences(db, clock)


async def test_a_silence_mutes_matching_alerts_while_active(silences, clock):
    sid = await silences.create(TEAM_A + [Matcher("alertname", "=~", "Budget.*")], T0 + 60, T0 + 600, "ann", "deploy")
    a_warning = {"alertname": "BudgetWarning", "team": "a"}
    assert silences.get(sid).state(clock()) is SilenceState.PENDING
    assert silences.is_silenced(a_warning) == []  # pending: not yet muting
    clock.t = T0 + 60
    assert silences.is_silenced(a_warning) == [sid]
    assert silences.is_silenced({"alertname": "BudgetWarning", "team": "b"}) == []
    assert silences.is_silenced({"alertname": "ToolFailures", "team": "a"}) == []
    clock.t = T0 + 600  # expired by the clock alone
    assert silences.is_silenced(a_warning) == []
    assert silences.get(sid).state(clock()) is SilenceState.EXPIRED


async def test_expire_active_and_pending_silences(silences, clock):
    active = await silences.create(TEAM_A, T0, T0 + 600, "ann", "x")
    pending = await silences.create(TEAM_A, T0 + 100, T0 + 600, "ann", "y")
    assert [s.id for s in silences.list()] == [active, pending]  # active first, then pending
    clock.t = T0 + 10
    await silences.expire(active)
    await silences.expire(pending)
    a, p = silences.get(active), silences.get(pending)
    assert a.ends_at == T0 + 10 and a.starts_at == T0
    assert p.starts_at == p.ends_at == T0 + 10
    assert silences.is_silenced({"team": "a"}) == []
    with pytest.raises(SilenceError, match="already expired"):
        await silences.expire(active)
    with pytest.raises(KeyError):
        await silences.expire("nope")
    assert {s.id for s in silences.list([SilenceState.EXPIRED])} == {active, pending}
    assert silences.list([SilenceState.ACTIVE, SilenceState.PENDING]) == []


@pytest.mark.parametrize(
    "matchers, start, end, message",
    [
        ([], T0, T0 + 60, "at least one matcher"),
        ([Matcher("team", "=~", ".*")], T0, T0 + 60, "must not match the empty string"),
        (TEAM_A, T0 + 60, T0 + 60, "start time must be before end time"),
        (TEAM_A, T0 - 600, T0 - 60, "end time can't be in the past"),
    ],
)
async def test_invalid_silences_are_refused(silences, matchers, start, end, message):
    with pytest.raises(SilenceError, match=message):
        await silences.create(matchers, start, end, "ann", "x")


async def test_update_in_place_or_replace_like_alertmanager(silences, clock):
    sid = await silences.create(TEAM_A, T0 - 100, T0 + 600, "ann", "x")
    assert silences.get(sid).starts_at == T0  # a start in the past becomes now
    # same matchers, same start: extended in place
    assert await silences.create(TEAM_A, T0, T0 + 1200, "bob", "longer", silence_id=sid) == sid
    assert silences.get(sid).ends_at == T0 + 1200 and silences.get(sid).comment == "longer"
    # different matchers: the old one is expired and a new one created
    new = await silences.create([Matcher("team", "=", "b")], T0, T0 + 600, "bob", "other", silence_id=sid)
    assert new != sid
    assert silences.get(sid).state(clock()) is SilenceState.EXPIRED
    assert silences.is_silenced({"team": "b"}) == [new] and silences.is_silenced({"team": "a"}) == []
    with pytest.raises(KeyError):
        await silences.create(TEAM_A, T0, T0 + 60, "a", "b", silence_id="unknown")


async def test_silences_persist_and_are_garbage_collected(tmp_path, clock):
    db = SqliteDB(tmp_path / "s.db")
    db.open()
    reg = CollectorRegistry()
    s = Silences(db, clock, retention=3600, registry=reg)
    keep = await s.create(TEAM_A, T0, T0 + 600, "ann", "x")
    old = await s.create([Matcher("team", "=", "b")], T0, T0 + 60, "ann", "y")
    clock.t = T0 + 60
    assert reg.get_sample_value("alertmanager_silences", {"state": "active"}) == 1
    assert reg.get_sample_value("alertmanager_silences", {"state": "expired"}) == 1
    db.close()
    db = SqliteDB(tmp_path / "s.db")
    db.open()
    try:
        s = Silences(db, clock, retention=3600)
        assert s.is_silenced({"team": "a"}) == [keep] and s.get(old).comment == "y"
        clock.t = T0 + 60 + 3601
        assert await s.gc() == 1
        assert s.get(old) is None and s.get(keep) is not None
        assert Silences(db, clock).get(old) is None  # deleted from the database too
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------- HTTP API + CLI


@pytest.fixture
async def admin(aiohttp_server, db, clock, silences):
    """The alerting routes on a real loopback server; returns (base URL, silences)."""
    outbox = Outbox(db, {}, clock)
    dispatcher = Dispatcher(AlertingConfig(), db=db, outbox=outbox, silences=silences, now=clock)
    app = web.Application()
    alerting_routes(app, alerts=lambda: [], dispatcher=dispatcher, silences=silences)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


async def test_silence_api_round_trip(admin, aiohttp_client, clock):
    import aiohttp

    body = {
        "matchers": [
            {"name": "team", "value": "a", "isRegex": False, "isEqual": True},
            {"name": "alertname", "value": "Budget.*", "isRegex": True},
        ],
        "startsAt": "2026-05-28T20:26:40Z",
        "endsAt": "2026-05-28T22:26:40.000Z",
        "createdBy": "ann",
        "comment": "deploy",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{admin}/api/v2/silences", json=body) as r:
            assert r.status == 200
            sid = (await r.json())["silenceID"]
        async with http.get(f"{admin}/api/v2/silence/{sid}") as r:
            got = await r.json()
        assert got == {
            "id": sid,
            "status": {"state": "active"},
            "updatedAt": "2026-05-28T20:26:40.000Z",
            "matchers": [
                {"name": "team", "value": "a", "isRegex": False, "isEqual": True},
                {"name": "alertname", "value": "Budget.*", "isRegex": True, "isEqual": True},
            ],
            "startsAt": "2026-05-28T20:26:40.000Z",
            "endsAt": "2026-05-28T22:26:40.000Z",
            "createdBy": "ann",
            "comment": "deploy",
        }
        async with http.get(f"{admin}/api/v2/silences") as r:
            assert [s["id"] for s in await r.json()] == [sid]
        async with http.delete(f"{admin}/api/v2/silence/{sid}") as r:
            assert r.status == 200
        async with http.get(f"{admin}/api/v2/silence/{sid}") as r:
            assert (await r.json())["status"]["state"] == "expired"
        async with http.delete(f"{admin}/api/v2/silence/{sid}") as r:
            assert r.status == 400 and "already expired" in await r.json()
        async with http.delete(f"{admin}/api/v2/silence/nope") as r:
            assert r.status == 404
        async with http.get(f"{admin}/api/v2/silence/nope") as r:
            assert r.status == 404


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"matchers": []}, "at least one matcher"),
        ({"matchers": [{"name": "1bad", "value": "x", "isRegex": False}]}, "invalid matcher name"),
        ({"matchers": [{"name": "a", "value": "(", "isRegex": True}]}, "invalid regex"),
        ({"matchers": [{"name": "a", "value": "", "isRegex": False}]}, "must not match the empty string"),
        ({"endsAt": "tomorrow"}, "endsAt"),
        ({"endsAt": "2026-05-28T22:26:40"}, "no time zone"),
        ({"endsAt": "2020-01-01T00:00:00Z", "startsAt": "2019-01-01T00:00:00Z"}, "in the past"),
        ({"createdBy": None}, "createdBy and comment"),
        ({"id": "unknown"}, "not found"),
    ],
)
async def test_silence_api_rejects_bad_input_readably(admin, patch, message):
    import aiohttp

    body = {
        "matchers": [{"name": "team", "value": "a", "isRegex": False}],
        "startsAt": "2026-05-28T20:26:40Z",
        "endsAt": "2026-05-28T22:26:40Z",
        "createdBy": "ann",
        "comment": "x",
        **patch,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{admin}/api/v2/silences", json=body) as r:
            assert r.status in (400, 404)
            assert message in await r.json()
        async with http.post(f"{admin}/api/v2/silences", data=b"{nope") as r:
            assert r.status == 400


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="relay")
    sub = p.add_subparsers(dest="command", required=True)
    silence_cli.add_subparsers(sub)
    return p.parse_args(argv)


async def cli(argv: list[str], url: str | None) -> int:
    args = parse(argv)
    return await asyncio.to_thread(args.fn, args, base_url=url) if url else await asyncio.to_thread(args.fn, args)


async def test_cli_add_list_expire_against_a_running_api(admin, silences, capsys, clock):
    clock.t = None  # the CLI computes times from the real clock
    assert (
        await cli(
            [
                "silence",
                "add",
                "BudgetWarning",
                'team="a"',
                "--duration",
                "2h",
                "--author",
                "ann",
                "--comment",
                "deploy",
            ],
            admin,
        )
        == 0
    )
    sid = capsys.readouterr().out.strip()
    s = silences.get(sid)
    assert {str(m) for m in s.matchers} == {'alertname="BudgetWarning"', 'team="a"'}
    assert s.created_by == "ann" and s.comment == "deploy" and abs(s.ends_at - s.starts_at - 7200) < 2
    assert await cli(["silence", "list"], admin) == 0
    out = capsys.readouterr().out
    assert sid in out and 'team="a"' in out and "deploy" in out and "active" in out
    assert await cli(["silence", "expire", sid], admin) == 0
    assert silences.get(sid).state(clock()) is SilenceState.EXPIRED
    assert await cli(["silence", "list", "-q"], admin) == 0
    assert capsys.readouterr().out.strip() == ""
    assert await cli(["silence", "list", "--expired", "-q"], admin) == 0
    assert capsys.readouterr().out.strip() == sid
    assert await cli(["silence", "expire", sid], admin) == 1
    assert "already expired" in capsys.readouterr().err


async def test_cli_errors_are_reported_with_exit_codes(admin, capsys, monkeypatch):
    assert await cli(["silence", "add", 'team=~"("', "--comment", "x"], admin) == 2
    assert "invalid regex" in capsys.readouterr().err
    assert await cli(["silence", "add", "X", "--duration", "soon", "--comment", "x"], admin) == 2
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert await cli(["silence", "list"], dead) == 1
    assert "cannot reach relay" in capsys.readouterr().err
    # the URL comes from --url, then $RELAY_ADMIN_ENDPOINT (host:port accepted)
    monkeypatch.setenv("RELAY_ADMIN_ENDPOINT", admin.removeprefix("http://"))
    assert await cli(["silence", "list"], None) == 0
    assert silence_cli.resolve_url(parse(["silence", "--url", "0.0.0.0:9", "list"])) == "http://127.0.0.1:9"
