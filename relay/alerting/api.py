"""The alert and silence HTTP API, served on relay's admin endpoint (``service.admin.endpoint``).

Routes (JSON, camelCase, RFC 3339 UTC times, as Alertmanager's and Prometheus's APIs;
https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml and
https://prometheus.io/docs/prometheus/latest/querying/api/#alerts):

- ``GET /api/v1/alerts`` — active (pending and firing) alerts, Prometheus's envelope
  ``{"status": "success", "data": {"alerts": [...]}}``; each alert has ``labels``, ``annotations``, ``state``,
  ``activeAt``, ``firedAt``, ``value``, ``values``, ``fingerprint``, ``silencedBy`` (silence ids),
  ``inhibitedBy`` (fingerprints), ``rule``, ``window``, ``links``, ``generatorURL``. Query: ``filter`` (a label
  matcher, repeatable), ``state`` (``pending`` | ``firing``).
- ``GET /api/v2/silences`` — every silence (Alertmanager's ``gettableSilence`` objects).
- ``POST /api/v2/silences`` — body ``{matchers: [{name, value, isRegex, isEqual}], startsAt, endsAt, createdBy,
  comment, id?}`` → ``{"silenceID": "…"}``; 400 with the reason (a JSON string, as Alertmanager) on bad input,
  404 when ``id`` is unknown.
- ``GET /api/v2/silence/{id}``, ``DELETE /api/v2/silence/{id}`` (expire) — 404 when unknown.
- ``GET /api/v2/alerts/groups`` — the dispatcher's aggregation groups (``{labels, receiver: {name}, alerts}``).
- ``POST /-/reload`` — reload the configuration: 200, or 500 with ``failed to reload config: <reason>``
  (the old configuration stays in force), as Alertmanager.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from relay.alert import Alert, AlertState
from relay.alerting.dispatch.dispatcher import Dispatcher
from relay.alerting.dispatch.silences import Silence, SilenceError, Silences
from relay.matchers import Matcher, matches_all, parse_matchers

__all__ = ["alerting_routes", "format_time", "parse_time", "silence_to_json", "matcher_from_json", "matcher_to_json"]

_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def format_time(t: float | None) -> str | None:
    """Unix seconds → RFC 3339 UTC with milliseconds (``2026-05-01T12:00:00.000Z``); None stays None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: Any, field: str) -> float:
    """RFC 3339 text with a UTC offset (``Z`` or ``+02:00``) → unix seconds. Raises ``ValueError`` naming
    ``field``."""
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected an RFC 3339 time string")
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{field}: {value!r} is not an RFC 3339 time (e.g. 2026-05-01T12:00:00Z)") from None
    if dt.tzinfo is None:
        raise ValueError(f"{field}: {value!r} has no time zone (add Z or an offset)")
    return dt.timestamp()


def matcher_from_json(m: Any) -> Matcher:
    """Alertmanager's API matcher ``{name, value, isRegex, isEqual=true}`` → :class:`Matcher`. Raises
    ``ValueError``."""
    if not isinstance(m, dict):
        raise ValueError("each matcher must be an object {name, value, isRegex, isEqual}")
    name, value = m.get("name"), m.get("value")
    is_regex, is_equal = m.get("isRegex", False), m.get("isEqual", True)
    if not isinstance(name, str) or not _LABEL_NAME.match(name):
        raise ValueError(f"invalid matcher name {name!r}")
    if not isinstance(value, str):
        raise ValueError(f"matcher {name}: value must be a string")
    if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
        raise ValueError(f"matcher {name}: isRegex and isEqual must be booleans")
    op = ("=~" if is_equal else "!~") if is_regex else ("=" if is_equal else "!=")
    return Matcher(name, op, value)


def matcher_to_json(m: Matcher) -> dict[str, Any]:
    """:class:`Matcher` → Alertmanager's API matcher object."""
    return {"name": m.name, "value": m.value, "isRegex": m.op in ("=~", "!~"), "isEqual": m.op in ("=", "=~")}


def silence_to_json(s: Silence, now: float) -> dict[str, Any]:
    """A silence as Alertmanager's ``gettableSilence``."""
    return {
        "id": s.id,
        "status": {"state": s.state(now).value},
        "updatedAt": format_time(s.updated_at),
        "matchers": [matcher_to_json(m) for m in s.matchers],
        "startsAt": format_time(s.starts_at),
        "endsAt": format_time(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response(message, status=status)


def alerting_routes(
    app: web.Application,
    *,
    alerts: Callable[[], list[Alert]],
    dispatcher: Dispatcher,
    silences: Silences,
    reload: Callable[[], Awaitable[tuple[bool, str | None]]] | None = None,
    now: Callable[[], float] | None = None,
) -> None:
    """Add the alert, silence and reload routes to ``app``. ``alerts()`` returns the rules engine's current
    alerts; ``reload()`` reloads relay's configuration and returns ``(ok, error text)`` (no ``/-/reload`` route
    when None); ``now`` (unix seconds) defaults to the silences' clock."""
    clock = now or silences.now

    def status_of(labels: dict[str, str]) -> tuple[list[str], list[str]]:
        return dispatcher.silenced_by(labels), dispatcher.inhibited_by(labels)

    async def get_alerts(request: web.Request) -> web.Response:
        try:
            filters = parse_matchers(request.query.getall("filter", []))
        except ValueError as e:
            return _error(400, str(e))
        state = request.query.get("state")
        if state not in (None, "pending", "firing"):
            return _error(400, "state must be pending or firing")
        out = []
        for a in sorted(alerts(), key=lambda a: sorted(a.labels.items())):
            if a.state not in (AlertState.PENDING, AlertState.FIRING) or (state and a.state.value != state):
                continue
            if not matches_all(filters, a.labels):
                continue
            silenced, inhibited = status_of(a.labels)
            out.append(
                {
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "state": a.state.value,
                    "activeAt": format_time(a.active_at),
                    "firedAt": format_time(a.fired_at),
                    "value": a.value,
                    "values": a.values,
                    "fingerprint": a.fingerprint,
                    "silencedBy": silenced,
                    "inhibitedBy": inhibited,
                    "rule": a.rule,
                    "window": a.window,
                    "links": a.links,
                    "generatorURL": a.generator_url,
                }
            )
        return web.json_response({"status": "success", "data": {"alerts": out}})

    async def get_groups(_request: web.Request) -> web.Response:
        out = []
        for g in dispatcher.groups():
            items = []
            for a in g.alerts:
                silenced, inhibited = status_of(a.labels)
                suppressed = bool(silenced or inhibited) and a.state is AlertState.FIRING
                items.append(
                    {
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "startsAt": format_time(a.fired_at if a.fired_at is not None else a.active_at),
                        "endsAt": format_time(a.ends_at),
                        "generatorURL": a.generator_url,
                        "fingerprint": a.fingerprint,
                        "receivers": [{"name": g.receiver}],
                        "status": {
                            "state": "suppressed"
                            if suppressed
                            else ("active" if a.state is AlertState.FIRING else "unprocessed"),
                            "silencedBy": silenced,
                            "inhibitedBy": inhibited,
                        },
                    }
                )
            out.append(
                {"labels": g.group_labels, "receiver": {"name": g.receiver}, "groupKey": g.group_key, "alerts": items}
            )
        return web.json_response(out)

    async def list_silences(_request: web.Request) -> web.Response:
        t = clock()
        return web.json_response([silence_to_json(s, t) for s in silences.list()])

    async def post_silence(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body must be a JSON object")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        try:
            raw = body.get("matchers")
            if not isinstance(raw, list) or not raw:
                raise ValueError("matchers: at least one matcher is required")
            ms = [matcher_from_json(m) for m in raw]
            starts = parse_time(body["startsAt"], "startsAt") if body.get("startsAt") is not None else clock()
            ends = parse_time(body.get("endsAt"), "endsAt")
            created_by, comment = body.get("createdBy"), body.get("comment")
            if not isinstance(created_by, str) or not isinstance(comment, str):
                raise ValueError("createdBy and comment are required strings")
            sid = body.get("id") or None
            if sid is not None and not isinstance(sid, str):
                raise ValueError("id must be a string")
            new_id = await silences.create(ms, starts, ends, created_by, comment, silence_id=sid)
        except KeyError as e:
            return _error(404, f"silence {e.args[0]} not found")
        except (ValueError, SilenceError) as e:
            return _error(400, str(e))
        return web.json_response({"silenceID": new_id})

    async def get_silence(request: web.Request) -> web.Response:
        s = silences.get(request.match_info["id"])
        if s is None:
            return _error(404, f"silence {request.match_info['id']} not found")
        return web.json_response(silence_to_json(s, clock()))

    async def delete_silence(request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        try:
            await silences.expire(sid)
        except KeyError:
            return _error(404, f"silence {sid} not found")
        except SilenceError as e:
            return _error(400, str(e))
        return web.Response(status=200)

    async def post_reload(_request: web.Request) -> web.Response:
        assert reload is not None
        try:
            ok, err = await reload()
        except Exception as e:
            ok, err = False, f"{type(e).__name__}: {e}"
        if ok:
            return web.Response(status=200)
        return web.Response(status=500, text=f"failed to reload config: {err}\n")

    app.router.add_get("/api/v1/alerts", get_alerts)
    app.router.add_get("/api/v2/alerts/groups", get_groups)
    app.router.add_get("/api/v2/silences", list_silences)
    app.router.add_post("/api/v2/silences", post_silence)
    app.router.add_get("/api/v2/silence/{id}", get_silence)
    app.router.add_delete("/api/v2/silence/{id}", delete_silence)
    if reload is not None:
        app.router.add_post("/-/reload", post_reload)
