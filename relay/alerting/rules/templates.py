"""Annotation templates of alert rules: Jinja2 in a sandbox (https://jinja.palletsprojects.com/en/3.1.x/sandbox/)
with ``StrictUndefined``, so a typo such as ``{{ labels.teamid }}`` is an error at ``relay rules check`` time
rather than an empty string in a page.

Context of every template: ``labels`` (the alert's labels), ``values`` (its named figures, floats), ``value`` (the
compared figure), ``rule`` (``name``, ``kind``, ``group``, ``file``, ``window``, ``for``). Filters (also callable as
functions): ``usd`` (``1234.5`` → ``$1,234.50``), ``percent`` (a number in percent: ``82.44`` → ``82.4%``),
``ratio`` (0..1 as percent: ``0.0512`` → ``5.1%``), ``duration`` (seconds → ``1h30m``), ``datetime`` (unix
seconds → ``2026-11-02 10:00 UTC``, optional IANA zone), ``humanize`` (``1234567`` → ``1.23M``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from relay.alerting.rules.schema import format_duration

__all__ = ["compile_template", "render", "TemplateError", "FILTERS", "explain"]

TemplateError = jinja2.TemplateError


def usd(x: Any) -> str:
    """USD amount: two decimals with thousands separators; four significant decimals below one cent."""
    v = float(x)
    if v != 0 and abs(v) < 0.01:
        return f"${v:.4f}"
    return f"-${abs(v):,.2f}" if v < 0 else f"${v:,.2f}"


def percent(x: Any, digits: int = 1) -> str:
    """A number already in percent (``82.44`` → ``82.4%``)."""
    return f"{float(x):.{digits}f}%"


def ratio(x: Any, digits: int = 1) -> str:
    """A ratio 0..1 as percent (``0.0512`` → ``5.1%``)."""
    return f"{float(x) * 100:.{digits}f}%"


def duration(x: Any) -> str:
    """Seconds as ``1h30m`` / ``45s`` / ``250ms``."""
    return format_duration(float(x))


def datetime_(x: Any, tz: str = "UTC") -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM <zone>`` in IANA zone ``tz``."""
    v = float(x)
    if not math.isfinite(v):
        return "never"
    zone = zoneinfo.ZoneInfo(tz)
    return dt.datetime.fromtimestamp(v, zone).strftime("%Y-%m-%d %H:%M %Z")


def humanize(x: Any) -> str:
    """Metric-prefix form like Prometheus' ``humanize``: ``1234567`` → ``1.23M``, ``0.5`` → ``0.5``."""
    v = float(x)
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:.3g}{suffix}"
    return f"{v:.4g}"


#: The helpers, as filters and globals.
FILTERS = {
    "usd": usd,
    "percent": percent,
    "ratio": ratio,
    "duration": duration,
    "datetime": datetime_,
    "humanize": humanize,
}

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
_ENV.filters.update(FILTERS)
_ENV.globals.update(FILTERS)


def compile_template(text: str) -> jinja2.Template:
    """Compile ``text``; raises ``jinja2.TemplateSyntaxError`` (a :data:`TemplateError`) with the reason."""
    return _ENV.from_string(text)


def render(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render with ``context``; raises :data:`TemplateError` (e.g. ``UndefinedError`` for a missing label) or
    ``SecurityError`` (also a TemplateError) for unsafe access."""
    return template.render(context)


_NO_ATTR = re.compile(r"^'(?:dict object|[\w ]+ object)' has no attribute '([^']*)'$")
_NO_KEY = re.compile(r"^'(?:dict object|[\w ]+ object)' has no (?:attribute|element) (.+)$")
_UNDEFINED = re.compile(r"^'([^']*)' is undefined$")


def explain(exc: BaseException, context: dict[str, Any] | None = None) -> str:
    """A template error in plain words instead of Jinja's (``'dict object' has no attribute 'user'`` → ``no label
    or value named 'user' — labels here: alertname, team.id, …; write {{ labels.get('user', '…') }} …``).
    ``context`` is the render context (``labels``, ``values``…) used to list what is available."""
    msg = str(getattr(exc, "message", None) or exc)
    ctx = context or {}
    labels = sorted(ctx.get("labels") or {})
    values = sorted(ctx.get("values") or {})
    m = _NO_ATTR.match(msg) or _NO_KEY.match(msg)
    if m:
        name = m.group(1).strip("'\"")
        return (
            f"no label or value named {name!r} — labels here: {', '.join(labels) or 'none'}; values: "
            f"{', '.join(values) or 'none'}. Add it to the rule's group_by or labels, or write "
            f"{{{{ labels.get('{name}', 'unknown') }}}}"
        )
    m = _UNDEFINED.match(msg)
    if m:
        return (
            f"unknown name {m.group(1)!r}: a template can use labels, values, value and rule, and the filters "
            f"{', '.join(sorted(FILTERS))}"
        )
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"syntax error on line {exc.lineno} of the template: {msg}"
    if isinstance(exc, TypeError | ValueError | ZeroDivisionError):
        return f"cannot compute it ({msg}); check the filters and values used"
    return msg
