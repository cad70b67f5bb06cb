"""Helpers shared by the ``relay`` subcommands: loading the config file or exiting with its problems."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.config_load import RelayConfig

__all__ = ["load_or_exit", "report_problems"]


def load_or_exit(path: str | None, *, need_receivers: bool = True) -> RelayConfig:
    """The validated config at ``path`` (bundled defaults when None). On problems, prints them to stderr and raises
    ``SystemExit(2)``. ``need_receivers=False`` skips receiver secrets (commands that only read local state)."""
    from relay.config_load import ConfigError, load_config

    try:
        return load_config(path, need_receivers=need_receivers)
    except ConfigError as e:
        raise SystemExit(report_problems(e.problems)) from None


def report_problems(problems: list[str]) -> int:
    """Print config ``problems`` to stderr, one per line; returns exit code 2."""
    print(
        f"relay: invalid configuration ({len(problems)} problem{'s' if len(problems) != 1 else ''}):", file=sys.stderr
    )
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    return 2
