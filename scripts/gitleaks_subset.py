"""Convert gitleaks' default rule set (``config/gitleaks.toml``, https://github.com/gitleaks/gitleaks, MIT) into
the subset relay ships as ``relay/secrets/gitleaks.toml``.

Usage: ``python scripts/gitleaks_subset.py path/to/gitleaks.toml [commit] > relay/secrets/gitleaks.toml``

Kept per rule: ``id``, ``description``, ``regex`` (Go RE2 → Python ``re``: ``\\z`` → ``\\Z``), ``keywords``,
``secretGroup``, ``entropy`` and the ``regexes`` of allowlists that target the secret or the match (path
allowlists do not apply to telemetry). Dropped: rules whose regex Python cannot compile (Go allows ``(?i)``
in the middle of a pattern), ``generic-api-key`` (relay's own ``assignment`` rules replace it) and rules
without keywords (the keyword pre-filter is what keeps redaction cheap).
"""

from __future__ import annotations

import re
import sys
import tomllib

SKIP = {"generic-api-key", "pkcs12-file"}


def q(s: str) -> str:
    """A TOML literal string (multi-line literal when it contains a quote)."""
    if "'" not in s and "\n" not in s:
        return f"'{s}'"
    assert "'''" not in s
    return f"'''{s}'''"


def main() -> int:
    src = sys.argv[1]
    commit = sys.argv[2] if len(sys.argv) > 2 else "unknown"
    with open(src, "rb") as f:
        data = tomllib.load(f)
    out = [
        "# Subset of gitleaks' default rules (https://github.com/gitleaks/gitleaks/blob/master/config/gitleaks.toml,",
        f"# commit {commit}), converted by scripts/gitleaks_subset.py. Copyright (c) 2019 Zachary Rice, MIT License:",
        "# see LICENSE-gitleaks beside this file. Do not edit by hand: re-run the script.",
        "",
    ]
    kept = skipped = 0
    for r in data["rules"]:
        rx = r.get("regex")
        if r["id"] in SKIP or not rx or not r.get("keywords"):
            skipped += 1
            continue
        py = rx.replace(r"\z", r"\Z")
        try:
            re.compile(py)
        except re.error:
            skipped += 1
            continue
        kept += 1
        out.append("[[rules]]")
        out.append(f"id = {q(r['id'])}")
        out.append(f"description = {q(r.get('description', ''))}")
        out.append(f"regex = {q(py)}")
        out.append("keywords = [" + ", ".join(q(k) for k in r["keywords"]) + "]")
        if "secretGroup" in r:
            out.append(f"secretGroup = {r['secretGroup']}")
        if "entropy" in r:
            out.append(f"entropy = {r['entropy']}")
        allow = [
            x
            for a in r.get("allowlists", [])
            if a.get("regexTarget", "secret") in ("secret", "match") and "paths" not in a
            for x in a.get("regexes", [])
        ]
        allow = [x for x in allow if _compiles(x)]
        if allow:
            out.append("allow = [" + ", ".join(q(x) for x in allow) + "]")
        out.append("")
    print("\n".join(out))
    print(f"kept {kept} rules, skipped {skipped}", file=sys.stderr)
    return 0


def _compiles(p: str) -> bool:
    try:
        re.compile(p)
        return True
    except re.error:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
