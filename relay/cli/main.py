"""The ``relay`` command line: ``run``, ``check``, ``replay``, ``dead-letters``, ``rules check|test``,
``silence add|list|expire``, ``report``.

Exit codes: 0 success; 1 runtime failure; 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from relay import __version__
from relay.config_load import RelayConfig
from relay.config_load import ConfigError, load_config

__all__ = ["main"]


def _load(path: str | None) -> RelayConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"relay: invalid configuration ({len(e.problems)} problem{'s' if len(e.problems) != 1 else ''}):", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    """Start the daemon; returns when SIGTERM/SIGINT has drained it."""
    from relay.app import run

    cfg = _load(args.config)
    return asyncio.run(run(cfg))


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config file and print a summary of what it sets up."""
    cfg = _load(args.config)
    http = cfg.receivers.otlp.protocols.http
    grpc = cfg.receivers.otlp.protocols.grpc
    print(f"{args.config or '<defaults>'}: OK")
    print(f"  receivers: http {http.endpoint if http.enabled else 'off'}, grpc {grpc.endpoint if grpc.enabled else 'off'}")
    print(f"  storage:   {Path(cfg.storage.directory).resolve()} (max spool {cfg.storage.max_spool_size} bytes, fsync {cfg.storage.fsync})")
    for t in cfg.resolved_tenants():
        lf = t.langfuse
        export = f"Langfuse {lf.base_url}" if lf.enabled else "Langfuse export off (set LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY)"
        print(f"  tenant {t.name}: {len(t.tokens)} token(s); {export}")
    return _check_alerting(cfg, probe=args.probe)


def _check_alerting(cfg: RelayConfig, probe: bool) -> int:
    """Rules, receivers and report schedules of ``relay check``; with ``probe``, also ask each Jira project
    whether relay can file issues there (auth, project, issue type, fields)."""
    from relay.alerting.rules.load import RuleSet, RulesError

    try:
        rules = RuleSet.load(cfg.rules.files)
    except RulesError as e:
        print(f"  rules: {len(e.problems)} problem{'s' if len(e.problems) != 1 else ''}:", file=sys.stderr)
        for p in e.problems:
            print(f"    {p}", file=sys.stderr)
        return 2
    print(f"  rules:     {len(rules.rules)} from {len(rules.files)} file(s)")
    receivers = cfg.alerting.receivers
    print(f"  alerting:  {len(receivers)} receiver(s): " + (", ".join(
        f"{r.name} ({len(r.slack_configs)} slack, {len(r.jira_configs)} jira, {len(r.webhook_configs)} webhook)"
        for r in receivers) or "none (alerts are listed on /api/v1/alerts, nothing is sent)"))
    print(f"  reports:   {len(cfg.reports.schedules)} schedule(s)")
    if not probe:
        return 0
    return asyncio.run(_probe_jira(cfg))


async def _probe_jira(cfg: RelayConfig) -> int:
    from relay.notify.jira.notifier import JiraNotifier

    bad = 0
    for r in cfg.alerting.receivers:
        for i, jc in enumerate(r.jira_configs):
            n = JiraNotifier(r.name, i, jc)
            try:
                problems = await n.check()
            finally:
                await n.close()
            for p in problems:
                print(f"  receiver {r.name} jira/{i}: {p}", file=sys.stderr)
            bad += len(problems)
            if not problems:
                print(f"  receiver {r.name} jira/{i}: OK ({jc.project})")
    return 1 if bad else 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Move dead letters back to the export queue (or quarantined requests back to the pipeline); a running
    relay (or the next start) picks them up."""
    from relay.spool import Spool

    cfg = _load(args.config)
    spool = Spool.open(Path(cfg.storage.directory), fsync=cfg.storage.fsync, max_size=cfg.storage.max_spool_size)
    try:
        if args.quarantined:
            moved = asyncio.run(spool.requeue_quarantined())
        else:
            moved = asyncio.run(spool.requeue_dead_letters(tenant=args.tenant, ids=args.id or None))
    finally:
        spool.close()
    if args.quarantined:
        print(f"requeued {moved} quarantined request{'s' if moved != 1 else ''} for processing")
    else:
        print(f"requeued {moved} dead-lettered batch{'es' if moved != 1 else ''} for export")
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """List the dead-letter store."""
    from relay.spool import Spool

    cfg = _load(args.config)
    spool = Spool.open(Path(cfg.storage.directory), fsync=cfg.storage.fsync, max_size=cfg.storage.max_spool_size)
    try:
        rows = asyncio.run(spool.dead_letters(args.tenant))
    finally:
        spool.close()
    if not rows:
        print("no dead letters")
    for d in rows:
        print(f"{d.id}\t{d.tenant}\t{d.spans} spans\tstatus {d.status}\t{d.reason}")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    """``relay rules check FILES…`` / ``relay rules test FILES…`` (like promtool)."""
    from relay.cli.rules import rules_check, rules_test

    return rules_check(args.files) if args.rules_command == "check" else rules_test(args.files)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(prog="relay", description="OTLP relay for AI coding agents → Langfuse.")
    p.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", default=None, help="config file (default: embedded defaults)")
        return sp

    with_config(sub.add_parser("run", help="start the daemon")).set_defaults(fn=cmd_run)
    chk = with_config(sub.add_parser("check", help="validate a config file (and its rule files)"))
    chk.add_argument("--probe", action="store_true",
                     help="also contact each Jira receiver to check credentials, project, issue type and fields")
    chk.set_defaults(fn=cmd_check)
    r = with_config(sub.add_parser("replay", help="re-send dead-lettered batches"))
    r.add_argument("--tenant", default=None)
    r.add_argument("--id", type=int, action="append", help="only this dead letter id (repeatable)")
    r.add_argument("--quarantined", action="store_true",
                   help="instead, re-process requests the pipeline quarantined after an internal error")
    r.set_defaults(fn=cmd_replay)
    d = with_config(sub.add_parser("dead-letters", help="list dead-lettered batches"))
    d.add_argument("--tenant", default=None)
    d.set_defaults(fn=cmd_dead_letters)
    rules = sub.add_parser("rules", help="validate rule files or run their unit tests (like promtool)")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    rsub.add_parser("check", help="validate rule files (paths or globs)").add_argument("files", nargs="+", metavar="FILE")
    rsub.add_parser("test", help="run rule unit-test files (paths or globs)").add_argument("files", nargs="+", metavar="FILE")
    rules.set_defaults(fn=cmd_rules)
    from relay.cli import silence as silence_cli
    from relay.cli import report as report_cli

    with_config(silence_cli.add_subparsers(sub))
    report_cli.add_subparser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``relay`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
