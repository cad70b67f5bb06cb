"""Jinja2 templates of the Jira notifier: a sandboxed environment, the template context built from a
:class:`~relay.alert.Notification`, and relay's default summary, description and comment.

Templates run in :class:`jinja2.sandbox.SandboxedEnvironment` (no attribute access to internals, no I/O), with
``trim_blocks`` and ``lstrip_blocks``. Description and comment templates produce relay markup (see
:mod:`relay.notify.jira.adf`), converted to ADF (Cloud) or wiki markup (Data Center).

Context variables (all plain data, JSON-like):

==================== ===============================================================================
``status``           ``firing`` or ``resolved`` (the notification's status)
``receiver``         the receiver's name
``group_key``        the alert group's key; ``dedup_key`` the Jira dedup key of the group
``group_labels``     the group's labels (``dict``); ``scope`` them as ``k=v, …`` without ``alertname``
``common_labels``    labels equal on every alert; ``common_annotations`` likewise
``alertname``        the group's (or first alert's) ``alertname``
``severity``         the highest severity of the firing alerts (critical > warning > info), else of all
``alerts``           every alert (dicts, below); ``firing`` / ``resolved`` the subsets
``links``            every alert's links merged (title → URL); ``runbook_url`` the first ``runbook_url``
                     annotation (or a link titled "runbook")
``seq``, ``repeat``  the notification's sequence number (1 = first) and whether it is a repeat reminder
``notified_at``      the notification time, RFC 3339 UTC; ``external_url`` relay's URL
``environment``      the Jira config's ``environment``; ``issue_key`` the issue (comments only)
==================== ===============================================================================

Each alert (an :class:`AlertView`, a dict whose keys are also attributes): ``status``, ``name``, ``severity``,
``labels``, ``annotations``, ``value`` (the compared figure, float), ``values`` (named figures, floats),
``links``, ``rule``, ``window``, ``fingerprint``,
``starts_at`` / ``ends_at`` (RFC 3339 UTC or ``""``), ``generator_url``, ``scope`` (its labels as ``k=v, …``
without ``alertname`` and ``severity``). Filter ``num`` formats a number compactly (``1234.5`` → ``1,234.5``).
"""

from __future__ import annotations

import time
from typing import Any

from jinja2 import TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

from relay.alert import Alert, AlertState, Notification

__all__ = [
    "DEFAULT_SUMMARY",
    "DEFAULT_DESCRIPTION",
    "DEFAULT_COMMENT",
    "TemplateError",
    "AlertView",
    "environment",
    "compile_template",
    "render",
    "render_value",
    "template_context",
    "rfc3339",
    "severity_of",
]

_SEVERITY_ORDER = {"critical": 3, "error": 3, "warning": 2, "info": 1, "none": 0}

#: Default issue summary (plain text, at most 255 characters are sent).
DEFAULT_SUMMARY = "{{ alertname }}{% if scope %} ({{ scope }}){% endif %}"

#: Default issue description (relay markup).
DEFAULT_DESCRIPTION = """\
## {{ alertname }}{% if scope %} ({{ scope }}){% endif %}

{% if common_annotations.summary %}
{{ common_annotations.summary }}

{% endif %}
{% if common_annotations.description %}
{{ common_annotations.description }}

{% endif %}
- **Severity:** {{ severity }}
- **Group:** {% for k, v in group_labels.items() %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}{% endfor %}

{% for a in alerts %}
### {{ a.status | upper }}: {{ a.annotations.summary or a.name }}{% if a.scope %} ({{ a.scope }}){% endif %}

- **Value:** {{ a.value | num }}
{% for k, v in a.values.items() %}
- **{{ k }}:** {{ v | num }}
{% endfor %}
{% if a.window %}
- **Window:** {{ a.window }}
{% endif %}
- **Since:** {{ a.starts_at }}{% if a.ends_at %} (resolved {{ a.ends_at }}){% endif %}

- **Labels:** {% for k, v in a.labels.items() %}`{{ k }}={{ v }}`{% if not loop.last %} {% endif %}{% endfor %}

{% for title, url in a.links.items() %}
- [{{ title }}]({{ url }})
{% endfor %}

{% endfor %}
{% if runbook_url %}
**Runbook:** {{ runbook_url }}
{% endif %}
"""

#: Default comment on an existing issue (relay markup; a reference line is appended by the notifier).
DEFAULT_COMMENT = """\
**{{ status | upper }}**{% if status == "firing" %} – {{ firing | length }} alert(s) firing{% if resolved %}, \
{{ resolved | length }} resolved{% endif %}{% if repeat %} (still firing){% endif %}{% else %} – all alerts \
resolved{% endif %}

{% for a in alerts %}
- {{ a.status | upper }} {{ a.annotations.summary or a.name }}{% if a.scope %} ({{ a.scope }}){% endif %}: \
value {{ a.value | num }}{% for k, v in a.values.items() %}, {{ k }} {{ v | num }}{% endfor %}\
{% for title, url in a.links.items() %} [{{ title }}]({{ url }}){% endfor %}

{% endfor %}
"""


def _num(value: Any) -> str:
    """Compact number: integers without decimals, others with up to 4 significant decimals, thousands sep."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if f != f or f in (float("inf"), float("-inf")):
        return str(f)
    if f == int(f) and abs(f) < 1e15:
        return f"{int(f):,}"
    if abs(f) >= 100:
        return f"{f:,.2f}"
    return f"{f:,.4f}".rstrip("0").rstrip(".")


def environment() -> SandboxedEnvironment:
    """A new sandboxed Jinja2 environment with relay's filters (``num``)."""
    env = SandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, undefined=Undefined, autoescape=False
    )
    env.filters["num"] = _num
    return env


_ENV = environment()


def compile_template(source: str) -> Any:
    """Compile ``source`` in the shared sandbox. Raises :class:`jinja2.TemplateSyntaxError` when invalid."""
    return _ENV.from_string(source)


def render(source: str, context: dict[str, Any]) -> str:
    """Render template ``source`` with ``context``. Raises :class:`jinja2.TemplateError` (including sandbox
    ``SecurityError``) on failure."""
    return compile_template(source).render(context)


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render every string inside ``value`` (recursively through dicts and lists) as a template; other values
    are returned as they are. Used for custom-field values (``text``, ``{"value": …}``, ``[{"value": …}]``)."""
    if isinstance(value, str):
        return render(value, context) if ("{{" in value or "{%" in value) else value
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


def rfc3339(ts: float | None) -> str:
    """Unix seconds → ``YYYY-MM-DDTHH:MM:SSZ`` (UTC); ``""`` for None or 0."""
    if not ts:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def severity_of(notification: Notification) -> str:
    """The highest ``severity`` label among the firing alerts (all alerts when none fires); ``warning`` when
    there are no alerts."""
    alerts = notification.firing or notification.alerts
    if not alerts:
        return "warning"
    return max((a.severity for a in alerts), key=lambda s: _SEVERITY_ORDER.get(s, 0))


def _scope(labels: dict[str, str], skip: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items() if k not in skip)


class AlertView(dict):
    """One alert in the template context: a dict whose keys are also attributes, so ``a.values`` is the
    alert's figures (not ``dict.values``) and ``a["values"]`` works as well."""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        return super().__getattribute__(name)


def _alert(a: Alert) -> AlertView:
    return AlertView(
        {
            "status": "firing" if a.state is AlertState.FIRING else a.state.value,
            "name": a.name,
            "severity": a.severity,
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "value": a.value,
            "values": dict(a.values),
            "links": dict(a.links),
            "rule": a.rule,
            "window": a.window,
            "fingerprint": a.fingerprint,
            "starts_at": rfc3339(a.fired_at or a.active_at),
            "ends_at": rfc3339(a.ends_at),
            "generator_url": a.generator_url,
            "scope": _scope(a.labels, ("alertname", "severity")),
        }
    )


def template_context(
    notification: Notification, *, environment_name: str = "", dedup_key: str = "", issue_key: str = ""
) -> dict[str, Any]:
    """The template context of ``notification`` (see the module docstring for the variables)."""
    alerts = [_alert(a) for a in notification.alerts]
    links: dict[str, str] = {}
    runbook = ""
    for a in notification.alerts:
        links.update(a.links)
        runbook = runbook or a.annotations.get("runbook_url", "")
    if not runbook:
        runbook = next((u for t, u in links.items() if t.lower() == "runbook"), "")
    group_labels = dict(notification.group_labels)
    alertname = group_labels.get("alertname") or (notification.alerts[0].name if notification.alerts else "")
    return {
        "status": notification.status,
        "receiver": notification.receiver,
        "group_key": notification.group_key,
        "dedup_key": dedup_key,
        "group_labels": group_labels,
        "scope": _scope(group_labels, ("alertname",)),
        "common_labels": notification.common_labels,
        "common_annotations": notification.common_annotations,
        "alertname": alertname,
        "severity": severity_of(notification),
        "alerts": alerts,
        "firing": [a for a in alerts if a["status"] == "firing"],
        "resolved": [a for a in alerts if a["status"] == "resolved"],
        "links": links,
        "runbook_url": runbook,
        "seq": notification.seq,
        "repeat": notification.repeat,
        "notified_at": rfc3339(notification.created_at),
        "external_url": notification.external_url,
        "environment": environment_name,
        "issue_key": issue_key,
    }
