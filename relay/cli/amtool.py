"""``relay alert query`` and ``relay routes test``: Alertmanager's ``amtool alert query`` and ``amtool config routes
test`` for relay (https://github.com/prometheus/alertmanager#amtool).

- ``relay alert query [MATCHER…] [-o table|json] [-s] [-i]`` lists the alerts of a running relay (its admin API,
  ``GET /api/v1/alerts?filter=…``): by default the active ones (firing or pending, neither silenced nor
  inhibited), with ``--silenced``/``--inhibited`` those too. A bare first word is ``alertname=<word>``.
- ``relay routes test --config FILE LABEL=VALUE…`` prints the receivers the routing tree (``alerting.route``)
  sends an alert with those labels to, comma-separated like amtool; ``--verify-receivers A,B`` exits 1 unless
  they are exactly those; ``--tree`` also prints the matching route path.

The admin URL of ``alert query`` is resolved as for ``relay silence`` (``--url``, ``$RELAY_ADMIN_ENDPOINT``, the
config's ``service.admin.endpoint``, ``http://127.0.0.1:8888``). Exit codes: 0, 1 (request failed / verification
failed), 2 (bad usage).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Sequence

__all__ = ["add_subparsers"]


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    """Add ``alert`` (``query``) and ``routes`` (``test``) to relay's sub-commands."""
    a = sub.add_parser("alert", help="query the alerts of a running relay (like amtool alert query)")
    a.add_argument(
        "--url",
        default=None,
        help="relay's admin URL (default: $RELAY_ADMIN_ENDPOINT, the config's "
        "service.admin.endpoint, http://127.0.0.1:8888)",
    )
    a.add_argument("--config", "-c", default=None, help="config file (for service.admin.endpoint)")
    asub = a.add_subparsers(dest="alert_command", required=True)
    q = asub.add_parser(
        "query",
        help="list alerts matching all MATCHERs",
        description='Matchers: name="value", name!="value", name=~"regex", name!~"regex"; a bare '
        "first word means alertname=<word>.",
    )
    q.add_argument("matchers", nargs="*", metavar="MATCHER")
    q.add_argument(
        "--output",
        "-o",
        choices=["table", "simple", "json"],
        default="table",
        help="table (default; 'simple' is the same) or json",
    )
    q.add_argument("--silenced", "-s", action="store_true", help="also show silenced alerts")
    q.add_argument("--inhibited", "-i", action="store_true", help="also show inhibited alerts")
    a.set_defaults(fn=_alert_query)

    r = sub.add_parser("routes", help="which receiver gets an alert (like amtool config routes test)")
    rsub = r.add_subparsers(dest="routes_command", required=True)
    t = rsub.add_parser("test", help="print the receivers of an alert with LABELs")
    t.add_argument("labels", nargs="+", metavar="LABEL=VALUE")
    t.add_argument("--config", "-c", default=None, help="config file (its alerting.route and receivers)")
    t.add_argument(
        "--verify-receivers",
        default=None,
        metavar="R1,R2",
        help="exit 1 unless the alert goes to exactly these receivers",
    )
    t.add_argument("--tree", action="store_true", help="also print the path of each matching route")
    r.set_defaults(fn=_routes_test)


def _alert_query(args: argparse.Namespace) -> int:
    from relay.cli import silence as s

    try:
        url = s.resolve_url(args)
        matchers = [s._matcher(m, i == 0) for i, m in enumerate(args.matchers)]
        query = urllib.parse.urlencode([("filter", str(m)) for m in matchers])
        got = s._request("GET", f"{url}/api/v1/alerts" + (f"?{query}" if query else ""))
    except s._Usage as e:
        print(f"relay alert: {e}", file=sys.stderr)
        return 2
    except s._Failed as e:
        print(f"relay alert: {e}", file=sys.stderr)
        return 1
    alerts = [
        a
        for a in got["data"]["alerts"]
        if (args.silenced or not a.get("silencedBy")) and (args.inhibited or not a.get("inhibitedBy"))
    ]
    if args.output == "json":
        print(json.dumps(alerts, indent=2))
        return 0
    table = [("Alertname", "Starts At", "Summary", "State")]
    for a in alerts:
        state = a["state"]
        if a.get("silencedBy"):
            state += " (silenced)"
        elif a.get("inhibitedBy"):
            state += " (inhibited)"
        table.append(
            (
                a["labels"].get("alertname", ""),
                a.get("firedAt") or a.get("activeAt") or "",
                (a.get("annotations") or {}).get("summary", ""),
                state,
            )
        )
    _print_table(table)
    return 0


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])


def _routes_test(args: argparse.Namespace) -> int:
    from relay.alerting.dispatch.routing import Route
    from relay.cli.common import load_or_exit
    from relay.matchers import Matcher

    labels: dict[str, str] = {}
    for text in args.labels:
        try:
            m = Matcher.parse(text)
        except ValueError as e:
            print(f"relay routes: {e}", file=sys.stderr)
            return 2
        if m.op != "=":
            print(f"relay routes: {text!r}: give labels as name=value", file=sys.stderr)
            return 2
        labels[m.name] = m.value
    cfg = load_or_exit(args.config, need_receivers=False)
    if not cfg.alerting.receivers:
        print("relay routes: no receivers are configured (alerting.receivers): alerts go nowhere", file=sys.stderr)
        return 1
    tree = Route(cfg.alerting.route)
    routes = tree.match(labels)
    receivers = [r.receiver or "" for r in routes]
    print(",".join(receivers))
    if args.tree:
        for r in routes:
            print(f"  {r.receiver}: route {r.id}, group by {list(r.opts.group_by) or 'nothing'}")
    if args.verify_receivers is not None:
        want = [x.strip() for x in args.verify_receivers.split(",") if x.strip()]
        if want != receivers:
            print(f"WARNING: expected receivers {','.join(want)!r} but got {','.join(receivers)!r}", file=sys.stderr)
            return 1
    return 0
