"""Value types shared by every config model: Go-style durations, sizes with units, optional secrets, and the
strict, immutable pydantic base model (unknown keys are errors).

Kept apart from ``relay.config`` so that component config modules (notifiers, alerting, ledger, reports) can import
them without importing the whole configuration (which imports those modules in turn).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr

__all__ = [
    "parse_duration",
    "parse_size",
    "compiled_patterns",
    "Duration",
    "Size",
    "OptionalSecret",
    "OptionalStr",
    "_Model",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_duration(value: Any) -> float:
    """Parse a duration into seconds (float).

    Accepts numbers (seconds) and Prometheus-style strings of ``<number><unit>`` parts, units ``ms``, ``s``, ``m``,
    ``h``, ``d``, ``w`` (``250ms``, ``30s``, ``1h30m``, ``7d``; fractions allowed). Raises ``ValueError`` for
    anything else or negative values.
    """
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return float(value)
    if isinstance(value, str):
        s = value.replace(" ", "")
        if s and _DURATION_PART.sub("", s) == "":
            return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(s))
        if re.fullmatch(r"\d+(?:\.\d+)?", s):
            return float(s)
    raise ValueError(f"invalid duration {value!r}: use a number of seconds or e.g. '500ms', '30s', '5m', '1h30m', '7d'")


def parse_size(value: Any) -> int:
    """Parse a size into bytes (int): integers are bytes; strings may carry B, KB, MB, GB, KiB, MiB, GiB, TiB.

    Raises ``ValueError`` for anything else or negative values.
    """
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '64MiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size must not be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = m.group(2).lower() if m.group(2) else None
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"invalid size {value!r}: use a number of bytes or e.g. '512KiB', '64MiB', '1GiB'")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


def _secret_or_none(value: Any) -> Any:
    """Treat empty strings (an unset ``${env:VAR}``) as "not configured"."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    return value


OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_secret_or_none)]
OptionalStr = Annotated[str | None, BeforeValidator(_secret_or_none)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def compiled_patterns(patterns: list[str]) -> list[str]:
    """Validate that every entry of ``patterns`` is a Python regular expression; returns them unchanged. Raises
    ``ValueError`` naming the first invalid one (pydantic turns it into a config error at its key)."""
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"invalid regex {p!r}: {e}") from e
    return patterns
