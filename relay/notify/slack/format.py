"""Text formatting for Slack messages: numbers with units, Slack ``mrkdwn`` escaping, and the "key figures" of an
alert (the numbers that crossed), as used by :mod:`relay.notify.slack.blocks`.

Units of :attr:`Alert.values <relay.alert.Alert.values>` are inferred from the value's **name**
(all values are floats):

==========================================================  ====================================  ==============
name                                                        unit                                  shown as
==========================================================  ====================================  ==============
``spend``, ``limit``, ``cost``, ``forecast``, ``budget``,   USD                                   ``$1,234.56``
``remaining``, ``amount``, ``*_usd``, ``cost_*``, ``spend_*``
``percent``, ``pct``, ``*_percent``, ``*_pct``               percent (0..100)                      ``81.2%``
``ratio``, ``rate``, ``share``, ``*_ratio``, ``*_rate``      ratio (0..1)                          ``12.5%``
``multiplier``, ``factor``, ``*_multiplier``                 multiple of a baseline                ``×3.2``
``*tokens*``                                                tokens                                ``1,234,567``
``*_ms``                                                    milliseconds                          ``850ms``
``duration``, ``latency``, ``age``, ``*_seconds``, ``*_s``   seconds                               ``1h 12m``
``*_at``, ``*_start``, ``*_end``                            unix seconds (0: none, not shown)     a date
``zscore``, ``z_score``                                     z-score                               ``z 3.1``
``count``, ``failed``, ``errors``, ``total``…, ``*_count``    count                                 ``1,234``
anything else                                               plain number                          ``1,234.5``
==========================================================  ====================================  ==============

The figures in the unit of the rule's ledger field — ``value``/``threshold`` of threshold rules, ``current``/
``baseline``/``stddev`` of spike rules — take the unit named by the alert's ``unit`` annotation (one of
:data:`UNITS`) or implied by its ``field`` annotation (a ledger field: ``cost_usd`` → USD, ``ttft_ms`` → ms,
``total_tokens`` → tokens, ``records`` → count), else plain numbers. The rule kind is inferred from the value
names the rules engine (``relay.alerting.evaluation.kinds``) produces: budget (``spend``, ``limit``, ``percent``,
``threshold`` USD, ``threshold_percent``, ``forecast``, ``projected_exceeded_at``, ``window_start``/``_end``),
error rate (``ratio``, ``failed``, ``total``, ``min_count``, ``threshold`` ratio, ``count_threshold``), spike
(``current``, ``baseline``, ``stddev``, ``ratio`` = current/baseline, ``zscore``, ``threshold``) and threshold
(``value``, ``threshold``, ``count``).

Slack ``mrkdwn`` escaping (``&``, ``<``, ``>``) and date tokens follow
https://docs.slack.dev/messaging/formatting-message-text .
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from relay.alert import Alert

__all__ = [
    "escape",
    "truncate",
    "link",
    "usd",
    "percent",
    "count",
    "duration",
    "timestamp",
    "slack_date",
    "format_value",
    "unit_of",
    "value_unit",
    "field_unit",
    "alert_kind",
    "headline",
    "extra_figures",
    "figures_line",
    "value_label",
]

UNITS = ("usd", "percent", "ratio", "multiplier", "tokens", "count", "seconds", "ms", "time", "zscore", "number")

_USD_NAMES = {"spend", "limit", "cost", "forecast", "budget", "remaining", "amount", "spent"}
_COUNT_NAMES = {
    "count",
    "errors",
    "failed",
    "requests",
    "calls",
    "total",
    "samples",
    "failures",
    "sessions",
    "events",
    "attempts",
    "retries",
    "records",
    "count_threshold",
}
#: Values in the unit of the rule's ledger field (see :func:`field_unit`).
_FIELD_VALUES = {"value", "current", "baseline", "stddev"}
#: Values shown elsewhere (the window line) or that are rule settings rather than figures.
_NOT_FIGURES = {"window_start", "window_end", "min_count"}


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` for Slack ``mrkdwn`` / ``plain_text`` (Slack's control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int, marker: str = "…") -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``marker`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def link(url: str, title: str) -> str:
    """A ``mrkdwn`` link ``<url|title>`` (``|`` and ``>`` cannot appear inside; ``<``/``>`` in the URL are
    percent-encoded)."""
    safe_url = url.replace("<", "%3C").replace(">", "%3E").replace("|", "%7C").replace(" ", "%20")
    return f"<{safe_url}|{escape(title).replace('|', '/')}>"


def _num(v: float, decimals: int = 2) -> str:
    if not math.isfinite(v):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.1f}"
    if abs(v) >= 1:
        return f"{v:,.{decimals}f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def usd(v: float) -> str:
    """US dollars with two decimals and thousands separators: ``$1,234.50``, ``-$3.00``."""
    if not math.isfinite(v):
        return f"${v}"
    return f"-${-v:,.2f}" if v < 0 else f"${v:,.2f}"


def percent(p: float) -> str:
    """A percentage given on a 0..100 scale: ``81.2%``, ``100%``, ``0.25%`` (two decimals below 1 %)."""
    if not math.isfinite(p):
        return f"{p}%"
    if p != 0 and abs(p) < 1:
        return f"{p:.2f}%"
    s = f"{p:,.1f}"
    return (s[:-2] if s.endswith(".0") else s) + "%"


def count(v: float) -> str:
    """An integer count with thousands separators (``1,234,567``)."""
    return f"{int(round(v)):,}" if math.isfinite(v) else str(v)


def duration(seconds: float) -> str:
    """A human duration: ``850ms``, ``45s``, ``12m 5s``, ``1h 12m``, ``3d 4h``."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds.is_integer() else f"{seconds:.1f}s"
    s = int(round(seconds))
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m {secs}s" if secs else f"{minutes}m"


def timestamp(unix: float) -> str:
    """Unix seconds as ``2025-06-30 14:00 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix))


def slack_date(unix: float) -> str:
    """A Slack date token (shown in the reader's time zone) with a UTC fallback:
    ``<!date^1719756000^{date_short_pretty} {time}|2024-06-30 14:00 UTC>``."""
    return f"<!date^{int(unix)}^{{date_short_pretty}} {{time}}|{timestamp(unix)}>"


def unit_of(name: str) -> str:
    """The unit of a value named ``name`` (one of :data:`UNITS`), by the naming convention in the module doc."""
    n = name.lower()
    if n.endswith(("_at", "_start", "_end")):
        return "time"
    if n in _USD_NAMES or n.endswith("_usd") or n.startswith(("cost_", "spend_")):
        return "usd"
    if n in ("percent", "pct") or n.endswith(("_percent", "_pct")):
        return "percent"
    if n in ("ratio", "rate", "share") or n.endswith(("_ratio", "_rate")):
        return "ratio"
    if n in ("multiplier", "factor") or n.endswith("_multiplier"):
        return "multiplier"
    if "tokens" in n:
        return "tokens"
    if n.endswith("_ms"):
        return "ms"
    if n in ("duration", "latency", "age") or n.endswith(("_seconds", "_s", "_secs")):
        return "seconds"
    if n in ("zscore", "z_score"):
        return "zscore"
    if n in _COUNT_NAMES or n.endswith(("_count", "_total", "_errors", "_calls", "_requests")):
        return "count"
    return "number"


def format_value(v: float, unit: str) -> str:
    """``v`` formatted for ``unit`` (see :data:`UNITS`; unknown units format as plain numbers)."""
    if unit == "usd":
        return usd(v)
    if unit == "percent":
        return percent(v)
    if unit == "ratio":
        return percent(v * 100)
    if unit == "multiplier":
        return f"×{_num(v)}"
    if unit in ("tokens", "count"):
        return count(v)
    if unit == "seconds":
        return duration(v)
    if unit == "ms":
        return duration(v / 1000)
    if unit == "time":
        return timestamp(v)
    if unit == "zscore":
        return f"z {v:.1f}"
    return _num(v)


def alert_kind(alert: Alert) -> str:
    """``budget``, ``spike``, ``error_rate`` or ``threshold``, inferred from the names in ``alert.values``."""
    vals = alert.values
    if "limit" in vals or "spend" in vals or "budget" in vals:
        return "budget"
    if "baseline" in vals or "zscore" in vals or "z_score" in vals:
        return "spike"
    if "failed" in vals or "errors" in vals or "ratio" in vals or "error_rate" in vals:
        return "error_rate"
    return "threshold"


def field_unit(alert: Alert) -> str:
    """Unit of the rule's ledger field: the ``unit`` annotation when it names a known unit, else the unit of the
    ``field`` annotation's name (``cost_usd`` → usd, ``ttft_ms`` → ms…), else ``number``."""
    hint = alert.annotations.get("unit", "").strip().lower()
    if hint in UNITS:
        return hint
    field_name = alert.annotations.get("field", "").strip()
    return unit_of(field_name) if field_name else "number"


def value_unit(alert: Alert) -> str:
    """Unit of ``alert.value`` and of a ``threshold`` value: budget → usd, error rate → ratio, spike → multiplier
    or zscore (the rule's method, told by which statistic equals ``alert.value``), threshold → :func:`field_unit`."""
    kind = alert_kind(alert)
    if kind == "budget":
        return "usd"
    if kind == "error_rate":
        return "ratio"
    if kind == "spike":
        return "zscore" if _spike_method(alert) == "zscore" else "multiplier"
    return field_unit(alert)


def _spike_method(alert: Alert) -> str:
    vals = alert.values
    z = vals.get("zscore", vals.get("z_score"))
    if (
        z is not None
        and math.isclose(alert.value, z, rel_tol=1e-9, abs_tol=1e-12)
        and not math.isclose(alert.value, vals.get("ratio", math.nan), rel_tol=1e-9)
    ):
        return "zscore"
    return "ratio"


def value_label(name: str) -> str:
    """A field label for a value name: ``input_tokens`` → ``Input tokens``."""
    return name.replace("_", " ").replace(".", " ").strip().capitalize() or name


def _unit_for(alert: Alert, name: str) -> str:
    if name in _FIELD_VALUES and alert_kind(alert) in ("spike", "threshold"):
        return field_unit(alert)
    if name == "threshold":
        return value_unit(alert)
    return unit_of(name)


def _first(vals: dict[str, float], names: Iterable[str]) -> str | None:
    return next((n for n in names if n in vals), None)


def headline(alert: Alert) -> tuple[str, set[str]]:
    """The key figures of ``alert`` as one ``mrkdwn`` line, and the value names it used.

    budget: ``*$812.40* of *$1,000.00* (81.2%) · threshold 80% · forecast *$1,240.00* (limit reached <date>)``;
    error rate: ``*12.5%* failed (25 of 200) · threshold 5%`` or, for count rules, ``*7 failed* of 40 ·
    threshold 5 failures``; spike: ``*$3,840.00* vs baseline $1,200.00 (×3.2, z 4.1) · threshold ×3``;
    threshold: ``*1,234,567* · threshold 1,000,000``.
    """
    vals, used = alert.values, set(_NOT_FIGURES)
    kind = alert_kind(alert)
    parts: list[str] = []
    if kind == "budget":
        spend = vals.get("spend", vals.get("spent", alert.value))
        limit_name = _first(vals, ("limit", "budget"))
        used |= {
            "spend",
            "spent",
            "limit",
            "budget",
            "percent",
            "threshold",
            "threshold_percent",
            "forecast",
            "projected_exceeded_at",
        }
        text = f"*{usd(spend)}*"
        if limit_name:
            text += f" of *{usd(vals[limit_name])}*"
            pct = vals.get("percent")
            if pct is None and vals[limit_name]:
                pct = spend / vals[limit_name] * 100
            if pct is not None:
                text += f" ({percent(pct)})"
        parts.append(text)
        if "threshold_percent" in vals:
            parts.append(f"threshold {percent(vals['threshold_percent'])}")
        elif "threshold" in vals:
            parts.append(f"threshold {usd(vals['threshold'])}")
        forecast = vals.get("forecast")
        if forecast is not None and forecast > spend + 0.005:
            text = f"forecast *{usd(forecast)}*"
            if vals.get("projected_exceeded_at", 0) > 0:
                text += f" (limit reached {slack_date(vals['projected_exceeded_at'])})"
            parts.append(text)
    elif kind == "error_rate":
        ratio = vals.get("ratio", vals.get("error_rate", alert.value))
        failed_name = _first(vals, ("failed", "errors"))
        total_name = _first(vals, ("total", "requests", "samples", "calls"))
        used |= {"ratio", "error_rate", "threshold", "count_threshold"}
        ratio_rule = vals.get("threshold", 0) > 0 or vals.get("count_threshold", 0) <= 0
        if ratio_rule:
            text = f"*{percent(ratio * 100)}* failed"
            if failed_name and total_name:
                text += f" ({count(vals[failed_name])} of {count(vals[total_name])})"
        elif failed_name:
            text = f"*{count(vals[failed_name])} failed*" + (f" of {count(vals[total_name])}" if total_name else "")
        else:
            text = f"*{count(alert.value)} failed*"
        used |= {n for n in (failed_name, total_name) if n}
        parts.append(text)
        if vals.get("threshold", 0) > 0:
            parts.append(f"threshold {percent(vals['threshold'] * 100)}")
        if vals.get("count_threshold", 0) > 0:
            parts.append(f"threshold {count(vals['count_threshold'])} failures")
    elif kind == "spike":
        unit = field_unit(alert)
        used |= {"current", "baseline", "ratio", "zscore", "z_score", "threshold"}
        current = vals.get("current")
        stats = []
        if "ratio" in vals:
            stats.append(format_value(vals["ratio"], "multiplier"))
        z = _first(vals, ("zscore", "z_score"))
        if z:
            stats.append(format_value(vals[z], "zscore"))
        if current is not None:
            text = f"*{format_value(current, unit)}*"
            if "baseline" in vals:
                text += f" vs baseline {format_value(vals['baseline'], unit)}"
            text += f" ({', '.join(stats)})" if stats else ""
        else:
            text = f"*{format_value(alert.value, value_unit(alert))}*"
        parts.append(text)
        if "threshold" in vals:
            parts.append(f"threshold {format_value(vals['threshold'], value_unit(alert))}")
    else:
        unit = field_unit(alert)
        parts.append(f"*{format_value(vals.get('value', alert.value), unit)}*")
        used |= {"value", "threshold"}
        if "threshold" in vals:
            parts.append(f"threshold {format_value(vals['threshold'], unit)}")
    return " · ".join(parts), used


def extra_figures(alert: Alert, used: set[str]) -> list[tuple[str, str]]:
    """The values not shown by :func:`headline`, as ``(label, formatted value)`` pairs in name order."""
    out = []
    for name, v in sorted(alert.values.items()):
        unit = _unit_for(alert, name)
        if name in used or (unit == "time" and v <= 0):
            continue
        out.append((value_label(name), format_value(v, unit)))
    return out


def figures_line(alert: Alert, max_extra: int = 3) -> str:
    """:func:`headline` plus up to ``max_extra`` other values (``label value``), one ``mrkdwn`` line."""
    head, used = headline(alert)
    extras = extra_figures(alert, used)[:max_extra]
    return " · ".join([head] + [f"{label} {value}" for label, value in extras])
