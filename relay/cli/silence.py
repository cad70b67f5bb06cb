"""``relay silence add|list|query|expire``: manage silences of a running relay through its admin HTTP API, like
Alertmanager's ``amtool silence add|query|expire`` (https://github.com/prometheus/alertmanager#amtool).

Wiring (``relay/cli.py``)::

    from relay.cli import silence as silence_cli
    silence_cli.add_subparsers(sub)          # adds "silence" with its subcommands; sets fn=silence_cli.run

The admin URL is ``--url``, else ``$RELAY_ADMIN_ENDPOINT``, else the ``service.admin.endpoint`` of ``--config``
(when the parser has that option), else ``http://127.0.0.1:8888``. The admin token (``service.admin.auth.token``)
is read from ``$RELAY_ADMIN_TOKEN`` and sent as ``Authorization: Bearer``. Exit codes: 0 success, 1 the request failed
(relay unreachable, silence unknown, refused), 2 bad usage (matcher, duration or time).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from relay.alerting.api import matcher_to_json, parse_time
from relay.config_types import parse_duration
from relay.matchers import Matcher

__all__ = ["add_subparsers", "run", "resolve_url", "DEFAULT_URL", "ENV_URL"]

DEFAULT_URL = "http://127.0.0.1:8888"
ENV_URL = "RELAY_ADMIN_ENDPOINT"
ENV_TOKEN = "RELAY_ADMIN_TOKEN"
_OPS = ("=~", "!~", "!=", "=")


class _Usage(Exception):
    pass


class _Failed(Exception):
    pass


def add_subparsers(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``silence`` command (``add``, ``list``/``query``, ``expire``) to ``sub``; returns its parser.
    The parsed namespace has ``fn=run``."""
    p = sub.add_parser("silence", help="add, list or expire silences of a running relay (like amtool)")
    p.add_argument(
        "--url",
        default=None,
        help=f"relay's admin URL (default: ${ENV_URL}, the config's service.admin.endpoint, {DEFAULT_URL})",
    )
    ssub = p.add_subparsers(dest="silence_command", required=True)
    a = ssub.add_parser(
        "add",
        help="silence alerts matching all MATCHERs",
        description='Matchers: name="value", name!="value", name=~"regex", name!~"regex" '
        "(quotes optional); a bare first word means alertname=<word>.",
    )
    a.add_argument("matchers", nargs="+", metavar="MATCHER")
    a.add_argument("--duration", "-d", default="1h", help="how long from the start (default 1h; e.g. 30m, 2h, 1d)")
    a.add_argument("--start", default=None, help="start time, RFC 3339 (default: now)")
    a.add_argument("--end", default=None, help="end time, RFC 3339 (overrides --duration)")
    a.add_argument("--author", default=None, help="who creates the silence (default: $USER)")
    a.add_argument("--comment", required=True, help="why (required)")
    q = ssub.add_parser(
        "list",
        aliases=["query"],
        help="list active and pending silences (matching MATCHERs)",
        description="A silence is listed when, for every MATCHER, it has that same matcher or an "
        "equality MATCHER's label value is matched by its matcher of that name (like "
        "amtool silence query). A bare first word means alertname=<word>.",
    )
    q.add_argument("matchers", nargs="*", metavar="MATCHER")
    q.add_argument("--expired", action="store_true", help="list expired silences instead")
    q.add_argument("--quiet", "-q", action="store_true", help="print only the ids")
    q.add_argument(
        "--output",
        "-o",
        choices=["table", "simple", "json"],
        default="table",
        help="table (default; 'simple' is the same) or json (the API's silence objects)",
    )
    e = ssub.add_parser("expire", help="expire silences now")
    e.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(fn=run)
    return p


def resolve_url(args: argparse.Namespace) -> str:
    """The admin base URL for ``args`` (see the module docstring), without trailing slash."""
    url = getattr(args, "url", None) or os.environ.get(ENV_URL)
    if not url and getattr(args, "config", None):
        from relay.config_load import ConfigError, load_config

        try:  # only the admin endpoint is needed: receivers' secrets may be unset here
            url = load_config(args.config, need_receivers=False).service.admin.endpoint
        except ConfigError as e:
            raise _Usage("invalid configuration:\n  " + "\n  ".join(e.problems)) from None
    url = url or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        host, _, port = url.rpartition(":")
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        url = f"http://{host}:{port}"
    return url.rstrip("/")


def run(args: argparse.Namespace, *, base_url: str | None = None) -> int:
    """Execute a parsed ``relay silence …`` command; prints results to stdout, errors to stderr; returns the
    exit code. ``base_url`` overrides the URL resolution."""
    try:
        url = base_url or resolve_url(args)
        cmd = args.silence_command
        if cmd == "add":
            return _add(url, args)
        if cmd in ("list", "query"):
            return _list(url, args)
        return _expire(url, args)
    except _Usage as e:
        print(f"relay silence: {e}", file=sys.stderr)
        return 2
    except _Failed as e:
        print(f"relay silence: {e}", file=sys.stderr)
        return 1


def _matcher(text: str, first: bool) -> Matcher:
    if first and not any(op in text for op in _OPS):
        return Matcher("alertname", "=", text)
    try:
        return Matcher.parse(text)
    except ValueError as e:
        raise _Usage(str(e)) from None


def _add(url: str, args: argparse.Namespace) -> int:
    matchers = [_matcher(t, i == 0) for i, t in enumerate(args.matchers)]
    try:
        start = parse_time(args.start, "--start") if args.start else time.time()
        end = parse_time(args.end, "--end") if args.end else start + parse_duration(args.duration)
    except ValueError as e:
        raise _Usage(str(e)) from None
    author = args.author or os.environ.get("USER") or getpass.getuser()
    body = {
        "matchers": [matcher_to_json(m) for m in matchers],
        "startsAt": _rfc3339(start),
        "endsAt": _rfc3339(end),
        "createdBy": author,
        "comment": args.comment,
    }
    got = _request("POST", f"{url}/api/v2/silences", body)
    print(got["silenceID"])
    return 0


def _list(url: str, args: argparse.Namespace) -> int:
    silences = _request("GET", f"{url}/api/v2/silences")
    wanted = {"expired"} if args.expired else {"active", "pending"}
    query = [_matcher(t, i == 0) for i, t in enumerate(getattr(args, "matchers", None) or [])]
    rows = [
        s
        for s in silences
        if s["status"]["state"] in wanted and _silence_matches(query, [_from_json(m) for m in s["matchers"]])
    ]
    if getattr(args, "output", "table") == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if args.quiet:
        for s in rows:
            print(s["id"])
        return 0
    table = [("ID", "Matchers", "Starts At", "Ends At", "State", "Created By", "Comment")]
    for s in rows:
        ms = " ".join(str(_from_json(m)) for m in s["matchers"])
        table.append((s["id"], ms, s["startsAt"], s["endsAt"], s["status"]["state"], s["createdBy"], s["comment"]))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0


def _expire(url: str, args: argparse.Namespace) -> int:
    status = 0
    for sid in args.ids:
        try:
            _request("DELETE", f"{url}/api/v2/silence/{urllib.parse.quote(sid, safe='')}")
        except _Failed as e:
            print(f"relay silence: {e}", file=sys.stderr)
            status = 1
    return status


def _silence_matches(query: list[Matcher], have: list[Matcher]) -> bool:
    """Whether a silence with matchers ``have`` is selected by every ``query`` matcher: the silence has the same
    matcher, or the query is ``name="v"`` and the silence's matchers on ``name`` all match ``v``."""
    for q in query:
        if any((m.name, m.op, m.value) == (q.name, q.op, q.value) for m in have):
            continue
        same = [m for m in have if m.name == q.name]
        if q.op == "=" and same and all(m.matches({q.name: q.value}) for m in same):
            continue
        return False
    return True


def _from_json(m: dict[str, Any]) -> Matcher:
    op = ("=~" if m.get("isEqual", True) else "!~") if m.get("isRegex") else ("=" if m.get("isEqual", True) else "!=")
    return Matcher(m["name"], op, m["value"])


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _request(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if os.environ.get(ENV_TOKEN):
        headers["Authorization"] = f"Bearer {os.environ[ENV_TOKEN].strip()}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace").strip()
        try:
            msg = json.loads(text)
        except ValueError:
            msg = text
        raise _Failed(f"{method} {url}: HTTP {e.code}: {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _Failed(f"cannot reach relay at {url}: {reason}") from None
    return json.loads(raw) if raw.strip() else None
