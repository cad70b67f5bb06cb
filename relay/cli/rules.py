"""``relay rules check FILES…`` and ``relay rules test FILES…`` (like ``promtool check rules`` / ``promtool test
rules``). Both print to ``out``/``err`` and return the exit code: 0 all good, 1 a file is invalid or a test failed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from relay.alerting.rules.load import expand_paths, load_rule_file
from relay.alerting.rules.schema import format_duration
from relay.alerting.testing import run_test_file

__all__ = ["rules_check", "rules_test"]


def rules_check(paths: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate rule files (paths or globs): print ``<file>: OK (<n> rules in <m> groups)`` with one line per rule,
    or every problem naming file, line, group, rule and field. Returns 0 or 1."""
    out, err = out or sys.stdout, err or sys.stderr
    files, problems = expand_paths(paths)
    for p in problems:
        print(p, file=err)
    if not files and not problems:
        print("no rule files matched", file=err)
        return 1
    ok = not problems
    for f in files:
        rules, errs = load_rule_file(f)
        if errs:
            ok = False
            print(f"{f}: {len(errs)} problem{'s' if len(errs) != 1 else ''}:", file=err)
            for e in errs:
                print(f"  {e}", file=err)
            continue
        groups = {r.group for r in rules}
        print(
            f"{f}: OK ({len(rules)} rule{'s' if len(rules) != 1 else ''} in {len(groups)} "
            f"group{'s' if len(groups) != 1 else ''})",
            file=out,
        )
        for r in rules:
            extra = f", for {format_duration(r.for_s)}" if r.for_s else ""
            print(f"  {r.group}/{r.name}: {r.kind} over {r.window.describe()}{extra}", file=out)
    return 0 if ok else 1


def rules_test(paths: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run rule unit-test files (paths or globs; format in ``relay.alerting.testing``), printing what
    ``promtool test rules`` prints: ``Unit Testing:  <file>`` then ``  SUCCESS`` or ``  FAILED:`` and each failure
    with its ``exp:``/``got:`` alerts (``Labels:{…}``, ``Annotations:{…}``). Returns 0 or 1."""
    out, err = out or sys.stdout, err or sys.stderr
    files, problems = expand_paths(paths)
    for p in problems:
        print(p, file=err)
    if not files and not problems:
        print("no test files matched", file=err)
        return 1
    ok = not problems
    for f in files:
        print(f"Unit Testing:  {f}", file=out)  # promtool's output, two spaces included
        res = run_test_file(f)
        for line in res.lines:
            print(line, file=out)
        if res.ok:
            print("  SUCCESS", file=out)
        else:
            ok = False
            print(f"  {res.failed} of {res.tests} test{'s' if res.tests != 1 else ''} failed", file=out)
        print("", file=out)
    return 0 if ok else 1
