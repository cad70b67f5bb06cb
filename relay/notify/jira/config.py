"""Jira integration config (owned by the Jira notifier): ``receivers[].jira_configs[]``.

Names follow Alertmanager's native ``jira_configs`` where they exist (``project``, ``issue_type``, ``summary``,
``description``, ``labels``, ``reopen_transition``, ``reopen_duration``, ``resolve_transition``,
``wont_fix_resolution``, ``send_resolved``; https://prometheus.io/docs/alerting/latest/configuration/#jira_config)
and jiralert's otherwise (``components``, custom fields; https://github.com/prometheus-community/jiralert).

Example::

    jira_configs:
      - flavor: cloud                       # cloud: REST v3 + email/API token; datacenter: REST v2 + PAT
        api_url: https://example.atlassian.net
        user: alerts@example.com
        api_token: ${env:JIRA_API_TOKEN}
        project: OPS
        issue_type: Bug
        environment: prod                   # qualifies the dedup key
        components: [ai-usage]
        labels: ["relay", "{{ alertname }}"]
        custom_fields: {customfield_10010: {value: "Platform"}}
        reopen_transition: Reopen
        reopen_duration: 7d
        resolve_transition: Done
"""

from __future__ import annotations

import re
from typing import Any, Literal

from jinja2 import TemplateSyntaxError
from pydantic import Field, field_validator, model_validator

from relay.config_security import TLSClientConfig
from relay.config_types import Duration, OptionalSecret, OptionalStr, _Model
from relay.notify.jira.templates import DEFAULT_COMMENT, DEFAULT_DESCRIPTION, DEFAULT_SUMMARY, compile_template

__all__ = ["JiraConfig", "DEFAULT_PRIORITY_MAP", "RESERVED_FIELDS"]

#: Severity label → Jira priority name (Jira's default priority scheme names).
DEFAULT_PRIORITY_MAP = {"critical": "Highest", "warning": "High", "info": "Medium"}
#: Fields relay sets itself; not allowed in ``custom_fields``.
RESERVED_FIELDS = frozenset({"project", "summary", "description", "issuetype", "labels", "priority", "components"})
_CUSTOM_FIELD = re.compile(r"^customfield_\d+$")
_FIELD_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _compile(name: str, source: str) -> None:
    try:
        compile_template(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"{name}: invalid template (line {exc.lineno}): {exc.message}") from None


def _compile_nested(name: str, value: Any) -> None:
    if isinstance(value, str):
        _compile(name, value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _compile_nested(f"{name}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _compile_nested(f"{name}[{i}]", v)


class JiraConfig(_Model):
    """A Jira project to open one issue per alert group in.

    Connection: ``flavor`` ``cloud`` (REST v3, ``Authorization: Basic base64(user:api_token)``, ADF bodies,
    search ``POST /rest/api/3/search/jql``) or ``datacenter`` (Data Center / Server, REST v2, ``Authorization:
    Bearer <personal_access_token>``, wiki-markup bodies, search ``POST /rest/api/2/search``). ``api_url`` is
    the site's base URL (``https://example.atlassian.net``; a trailing ``/rest/api/N`` is accepted and dropped).
    ``timeout`` (seconds) bounds each HTTP request.

    Issue fields: ``project`` (key), ``issue_type`` (name), ``priority_map`` (``severity`` label of the
    highest-severity firing alert → priority name; no priority is sent for an unmapped severity),
    ``components`` (names), ``labels`` (templates; spaces become ``_``, at most 255 characters),
    ``custom_fields`` (field id → value; strings anywhere inside are templates; shapes as Jira expects them:
    text ``"…"``, select ``{"value": "…"}``, multi-select ``[{"value": "…"}]``, number). ``summary``,
    ``description`` and ``comment`` are Jinja2 templates (sandboxed; context in :mod:`relay.notify.jira.templates`).

    Dedup: every issue carries the group's dedup key ``relay-<32 hex>`` (SHA-256 of ``environment`` and the
    group key) as a Jira label, or, with ``dedup_field`` (e.g. ``customfield_10050``, a text field), in that
    field instead (no label pollution). ``environment`` keeps two relay deployments sharing a project apart.
    ``search_lag`` (seconds) is how long Jira's search may miss a just-created issue (Cloud search is
    eventually consistent); see :class:`relay.notify.jira.notifier.JiraNotifier`.

    Lifecycle: ``reopen_transition`` (transition name, e.g. ``Reopen`` or ``To Do``) is applied when a group
    fires again within ``reopen_duration`` (seconds; 0 = never reopen: a new issue is opened) of the issue's
    resolution; an issue resolved as ``wont_fix_resolution`` is never reopened (see the notifier for the exact
    rule). On resolve (``send_resolved``) a comment is added and ``resolve_transition`` (e.g. ``Done``) applied
    when set, with ``resolve_resolution`` as the transition's ``resolution`` field when set. ``update_summary``
    / ``update_priority`` / ``update_description``: while firing, rewrite those fields of the open issue when
    their rendered value changed.
    """

    flavor: Literal["cloud", "datacenter"] = "cloud"
    api_url: str
    user: OptionalStr = None
    api_token: OptionalSecret = None
    personal_access_token: OptionalSecret = None
    timeout: Duration = 10.0
    #: Outbound TLS: ``ca_file`` for a Jira with a private CA (``configtls`` client keys).
    tls: TLSClientConfig = TLSClientConfig()

    project: str = Field(min_length=1)
    issue_type: str = Field("Bug", min_length=1)
    priority_map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PRIORITY_MAP))
    components: list[str] = []
    labels: list[str] = []
    custom_fields: dict[str, Any] = {}
    dedup_field: OptionalStr = None
    environment: str = ""

    summary: str = DEFAULT_SUMMARY
    description: str = DEFAULT_DESCRIPTION
    comment: str = DEFAULT_COMMENT

    reopen_transition: OptionalStr = None
    reopen_duration: Duration = 0.0
    resolve_transition: OptionalStr = None
    resolve_resolution: OptionalStr = None
    wont_fix_resolution: OptionalStr = "Won't Fix"
    send_resolved: bool = True
    update_summary: bool = True
    update_priority: bool = True
    update_description: bool = False
    search_lag: Duration = 30.0

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("api_url must be an http(s) URL such as https://example.atlassian.net")
        return re.sub(r"/rest/api/\d+$", "", v)

    @field_validator("summary", "description", "comment")
    @classmethod
    def _template(cls, v: str, info: Any) -> str:
        _compile(info.field_name, v)
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        for i, label in enumerate(v):
            _compile(f"labels[{i}]", label)
        return v

    @field_validator("custom_fields")
    @classmethod
    def _custom_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if key in RESERVED_FIELDS:
                raise ValueError(f"custom_fields: {key!r} is set by relay; use the dedicated option")
            if not _FIELD_ID.match(key):
                raise ValueError(f"custom_fields: {key!r} is not a Jira field id (e.g. customfield_10010)")
            _compile_nested(f"custom_fields.{key}", value)
        return v

    @field_validator("dedup_field")
    @classmethod
    def _dedup_field(cls, v: str | None) -> str | None:
        if v is not None and not _CUSTOM_FIELD.match(v):
            raise ValueError("dedup_field must be a custom field id such as customfield_10050")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> JiraConfig:
        if self.flavor == "cloud":
            if not self.user or self.api_token is None:
                raise ValueError("flavor cloud needs user (the account's email) and api_token")
            if self.personal_access_token is not None:
                raise ValueError("personal_access_token is for flavor datacenter; Cloud uses user + api_token")
        else:
            if self.personal_access_token is None:
                raise ValueError("flavor datacenter needs personal_access_token (sent as a Bearer token)")
            if self.api_token is not None:
                raise ValueError("api_token is for flavor cloud; Data Center uses personal_access_token")
        if self.reopen_duration > 0 and not self.reopen_transition:
            raise ValueError("reopen_duration needs reopen_transition (the name of the reopening transition)")
        if self.dedup_field and self.dedup_field in self.custom_fields:
            raise ValueError(f"{self.dedup_field} is the dedup_field; do not set it in custom_fields")
        return self

    @property
    def api_version(self) -> str:
        """``"3"`` for Cloud, ``"2"`` for Data Center."""
        return "3" if self.flavor == "cloud" else "2"
