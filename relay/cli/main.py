"""The ``relay`` command line: ``run``, ``check``, ``replay``, ``dead-letters``, ``rules check|test``,
``silence add|list|query|expire``, ``alert query``, ``routes test``, ``report``, ``hook claude-code``.

Exit codes: 0 success; 1 runtime failure; 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay import __version__

if TYPE_CHECKING:
    from relay.config_load import RelayConfig

from relay.cli.common import load_or_exit, report_problems

__all__ = ["main"]


def cmd_run(args: argparse.Namespace) -> int:
    """Start the daemon; returns when SIGTERM/SIGINT has drained it."""
    from relay.app import run
    from relay.runtime import loop_factory

    cfg = load_or_exit(args.config)
    try:
        factory = loop_factory(cfg.service.event_loop)
    except ImportError:
        print("relay: service.event_loop is uvloop, but uvloop is not installed (pip install uvloop)", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run(cfg))


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config file (and its rule files) and print what it sets up; with ``--probe``, also ask
    Langfuse, Slack and Jira whether the settings work. Problems go to stderr; "OK" is printed only without any."""
    from relay.config_load import ConfigError, load_config

    notes: list[str] = []
    try:
        cfg = load_config(args.config, notes=notes)
    except ConfigError as e:
        return report_problems(e.problems)
    rules, problems = _rules(cfg)
    if problems:
        return report_problems(problems)
    from relay.app import langfuse_missing

    http = cfg.receivers.otlp.protocols.http
    grpc = cfg.receivers.otlp.protocols.grpc
    print(f"{args.config or '<defaults>'}: OK")
    print(
        f"  receivers: http {http.endpoint if http.enabled else 'off'}, grpc {grpc.endpoint if grpc.enabled else 'off'}"
    )
    print(
        f"  storage:   {Path(cfg.storage.directory).resolve()} (max spool {cfg.storage.max_spool_size} bytes, fsync {cfg.storage.fsync})"
    )
    for t in cfg.resolved_tenants():
        lf = t.langfuse
        missing = langfuse_missing(lf)
        if not missing:
            export = f"Langfuse {lf.base_url}"
        elif len(missing) == 3:
            export = "Langfuse export off (set LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY)"
        else:
            export = f"Langfuse export OFF: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
        print(f"  tenant {t.name}: {len(t.tokens)} token(s); {export}")
    from relay.posture import security_posture

    print("  security:")
    for line in security_posture(cfg):
        print(f"    {line}")
    print(f"  rules:     {len(rules.rules)} from {len(rules.files)} file(s)")
    receivers = cfg.alerting.receivers
    print(
        f"  alerting:  {len(receivers)} receiver(s): "
        + (
            ", ".join(
                f"{r.name} ({len(r.slack_configs)} slack, {len(r.jira_configs)} jira, {len(r.webhook_configs)} webhook)"
                for r in receivers
            )
            or "none (alerts are listed on /api/v1/alerts, nothing is sent)"
        )
    )
    print(f"  reports:   {len(cfg.reports.schedules)} schedule(s)")
    sc = cfg.scores
    print(
        f"  scores:    {'on' if sc.enabled else 'off'}, sessions scored after {sc.session_idle:g}s idle, "
        f"{len(sc.custom)} custom; Langfuse public API on the OTLP/HTTP port: "
        f"{'on' if cfg.receivers.otlp.protocols.http.langfuse_compatible_path else 'off'}"
    )
    for n in notes:  # unset ${env:…} references, except the optional Langfuse environment and release
        if not re.search(r"\.(environment|release): ", n):
            print(f"  note: {n}")
    if not args.probe:
        return 0
    from relay.cli.probe import probe_all

    oks, bad = asyncio.run(probe_all(cfg))
    for line in oks:
        print(f"  probe: {line}")
    for line in bad:
        print(f"  probe: {line}", file=sys.stderr)
    return 1 if bad else 0


def _rules(cfg: RelayConfig) -> tuple[Any, list[str]]:
    """The rule files ``rules.files`` names (a ``RuleSet``, None when invalid) and their problems: unreadable or
    invalid files, and globs matching nothing (which would silently load no rules)."""
    import glob as _glob

    from relay.alerting.rules.load import RulesError, RuleSet

    problems = [
        f"rules.files: {f!r} matches no file"
        for f in cfg.rules.files
        if _glob.has_magic(f) and not any(Path(x).is_file() for x in _glob.glob(f, recursive=True))
    ]
    try:
        return RuleSet.load(cfg.rules.files), problems
    except RulesError as e:
        return None, problems + list(e.problems)


def cmd_replay(args: argparse.Namespace) -> int:
    """Move dead letters back to the export queue (or quarantined requests back to the pipeline); a running
    relay (or the next start) picks them up."""
    from relay.spool import Spool

    cfg = load_or_exit(args.config, need_receivers=False)
    spool = Spool.open(Path(cfg.storage.directory), fsync=cfg.storage.fsync, max_size=cfg.storage.max_spool_size)
    try:
        if args.scores:
            from relay.usage.sqlite_scores import requeue_score_dead_letters

            moved = asyncio.run(spool.db.run(lambda c: requeue_score_dead_letters(c, args.tenant, args.id)))
            print(f"requeued {moved} dead-lettered score{'s' if moved != 1 else ''} for delivery")
            return 0
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

    cfg = load_or_exit(args.config, need_receivers=False)
    spool = Spool.open(Path(cfg.storage.directory), fsync=cfg.storage.fsync, max_size=cfg.storage.max_spool_size)
    try:
        if args.scores:
            from relay.usage.sqlite_scores import score_dead_letters

            scores = asyncio.run(spool.db.run(lambda c: score_dead_letters(c, args.tenant)))
            print(
                "\n".join(f"{i}\t{t}\tscore {n}\tstatus {st}\t{r}" for i, t, n, st, r, _ in scores)
                or "no dead-lettered scores"
            )
            return 0
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
    chk.add_argument(
        "--probe",
        action="store_true",
        help="also ask each Langfuse project (health, keys, project), Slack integration (auth.test, "
        "channel access) and Jira receiver (credentials, project, issue type, fields) whether "
        "the settings work",
    )
    chk.set_defaults(fn=cmd_check)
    r = with_config(sub.add_parser("replay", help="re-send dead-lettered batches"))
    r.add_argument("--tenant", default=None)
    r.add_argument("--id", type=int, action="append", help="only this dead letter id (repeatable)")
    r.add_argument(
        "--quarantined",
        action="store_true",
        help="instead, re-process requests the pipeline quarantined after an internal error",
    )
    r.add_argument("--scores", action="store_true", help="instead, re-send dead-lettered Langfuse scores")
    r.set_defaults(fn=cmd_replay)
    d = with_config(sub.add_parser("dead-letters", help="list dead-lettered batches"))
    d.add_argument("--tenant", default=None)
    d.add_argument("--scores", action="store_true", help="list dead-lettered Langfuse scores instead")
    d.set_defaults(fn=cmd_dead_letters)
    rules = sub.add_parser("rules", help="validate rule files or run their unit tests (like promtool)")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    rsub.add_parser("check", help="validate rule files (paths or globs)").add_argument(
        "files", nargs="+", metavar="FILE"
    )
    rsub.add_parser("test", help="run rule unit-test files (paths or globs)").add_argument(
        "files", nargs="+", metavar="FILE"
    )
    rules.set_defaults(fn=cmd_rules)
    from relay.cli import amtool as amtool_cli
    from relay.cli import hook as hook_cli
    from relay.cli import report as report_cli
    from relay.cli import silence as silence_cli

    with_config(silence_cli.add_subparsers(sub))
    report_cli.add_subparser(sub)
    amtool_cli.add_subparsers(sub)
    hook_cli.add_subparser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``relay`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hook"]:  # runs before every prompt: skip loading the rest of relay
        from relay.cli.hook import main as hook_main

        return hook_main(argv[1:])
    from relay.cli.report import normalize_argv

    args = build_parser().parse_args(normalize_argv(argv))
    try:
        code = int(args.fn(args) or 0)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `relay … | head`: the reader is gone; exit quietly like other Unix tools
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
