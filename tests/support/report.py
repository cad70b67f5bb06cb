"""Run ``relay report … --format json`` over a data directory as a user does, and return the parsed report."""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

from relay.cli import report as report_cli


def report_json(data_dir: Path, day: str, tenant: str | None = None) -> dict:
    """``relay report daily --day DAY --format json --timezone UTC --group-by none`` over ``data_dir``'s ledger."""
    config = data_dir.parent / "report.yaml"
    config.write_text(f"storage:\n  directory: {data_dir}\n")
    p = argparse.ArgumentParser(prog="relay")
    report_cli.add_subparser(p.add_subparsers(dest="command", required=True))
    argv = [
        "report",
        "daily",
        "--day",
        day,
        "--format",
        "json",
        "--config",
        str(config),
        "--timezone",
        "UTC",
        "--group-by",
        "none",
    ]
    if tenant:
        argv += ["--tenant", tenant]
    args = p.parse_args(report_cli.normalize_argv(argv))
    out = io.StringIO()
    with redirect_stdout(out):
        assert args.fn(args) == 0
    return json.loads(out.getvalue())
