"""Loading relay's YAML configuration: ``${env:…}`` / ``${file:…}`` expansion, ``LANGFUSE_*`` defaults, and
validation errors that name the file, line and key.

Expansion syntax (Collector "confmap" providers, https://opentelemetry.io/docs/collector/configuration/):

- ``${env:NAME}`` — the environment variable, empty string when unset (a value that is only a reference to an
  unset variable becomes null, i.e. "not configured");
- ``${env:NAME:-default}`` — the variable, or ``default`` when unset or empty;
- ``${file:/path/to/secret}`` — the file's content with surrounding whitespace stripped (relative to the
  config file's directory).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from relay.alerting.config import AlertingConfig
from relay.alerting.rules.schema import RulesConfig
from relay.config import (
    AuthConfig,
    ExportersConfig,
    LangfuseConfig,
    PipelineConfig,
    ReceiversConfig,
    ServiceConfig,
    StorageConfig,
    TenantConfig,
    _Model,
)
from relay.config_security import is_loopback_host
from relay.reports.config import ReportsConfig
from relay.scores.config import ScoresConfig
from relay.usage.config import LedgerConfig
from relay.yaml_lines import yaml_line

__all__ = ["RelayConfig", "ConfigError", "load_config", "expand", "LANGFUSE_ENV"]

_EXPAND_RE = re.compile(r"\$\{(env|file):([^}:]+)(?::-([^}]*))?\}")


#: What ``localhost`` binds (both loopback addresses), for the port clash check.
_LOCALHOST = {"localhost", "127.0.0.1", "::1"}


class RelayConfig(_Model):
    """The whole configuration file."""

    receivers: ReceiversConfig = ReceiversConfig()
    exporters: ExportersConfig = ExportersConfig()
    pipeline: PipelineConfig = PipelineConfig()
    storage: StorageConfig = StorageConfig()
    auth: AuthConfig = AuthConfig()
    tenants: list[TenantConfig] = []
    service: ServiceConfig = ServiceConfig()
    #: Usage ledger: price table overrides (``relay.usage.config``).
    ledger: LedgerConfig = LedgerConfig()
    #: Rule files and their evaluation (``relay.alerting.rules.schema.RulesConfig``).
    rules: RulesConfig = RulesConfig()
    #: Alertmanager-style routing tree, receivers (Slack, Jira, webhooks), inhibition (``relay.alerting.config``).
    alerting: AlertingConfig = AlertingConfig()
    #: Scheduled usage summaries (``relay.reports.config``).
    reports: ReportsConfig = ReportsConfig()
    #: Langfuse scores computed from the usage ledger (``relay.scores.config``).
    scores: ScoresConfig = ScoresConfig()

    @model_validator(mode="after")
    def _check_tenants(self) -> RelayConfig:
        names = [t.name for t in self.tenants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:  # the message starts with the key path of the repeat, so the error names its line
            at = next(i for i, n in enumerate(names) if n in dupes and names.index(n) != i)
            raise ValueError(f"tenants[{at}].name: tenant names must be unique; repeated: {', '.join(dupes)}")
        seen: dict[str, str] = {}
        for i, t in enumerate(self.tenants):
            for tok in t.tokens:
                v = tok.get_secret_value()
                if v in seen and seen[v] != t.name:
                    raise ValueError(f"tenants[{i}].tokens: a token is shared by tenants {seen[v]!r} and {t.name!r}")
                seen[v] = t.name
        problems = self.security_problems()
        problems += self.reports.problems(
            [r.name for r in self.alerting.receivers], [t.name for t in self.resolved_tenants()]
        )
        problems += self._port_clashes()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def security_problems(self) -> list[str]:
        """Why this configuration would expose relay (each message names the key and the fix); empty when safe.

        - a receiver beyond loopback needs tenant tokens, or ``auth.allow_unauthenticated: true``;
        - ``auth.trust_tenant_header`` without tokens needs ``auth.trusted_proxies``;
        - the admin endpoint beyond loopback needs ``service.admin.auth.token``.
        """
        out: list[str] = []
        has_tokens = any(t.tokens for t in self.tenants)
        proto = self.receivers.otlp.protocols
        for name, r in (("http", proto.http), ("grpc", proto.grpc)):
            host = r.endpoint.rpartition(":")[0]
            if r.enabled and not is_loopback_host(host) and not has_tokens and not self.auth.allow_unauthenticated:
                out.append(
                    f"receivers.otlp.protocols.{name}.endpoint: {r.endpoint} listens beyond loopback but no tenant "
                    f"has tokens, so anyone who can reach it could write data; give tenants[].tokens "
                    f"(e.g. ${{env:RELAY_TOKEN}}), bind to localhost:<port>, or set auth.allow_unauthenticated: true"
                )
        if self.auth.trust_tenant_header and not has_tokens and not self.auth.trusted_proxies:
            out.append(
                "auth.trust_tenant_header: without tenant tokens any client could pick any tenant; list the "
                "proxies that set the header in auth.trusted_proxies (CIDRs) or give tenants[].tokens"
            )
        admin = self.service.admin
        if admin.enabled and not is_loopback_host(admin.endpoint.rpartition(":")[0]) and admin.auth.token is None:
            out.append(
                f"service.admin.endpoint: {admin.endpoint} listens beyond loopback without a token; set "
                f"service.admin.auth.token (e.g. ${{env:RELAY_ADMIN_TOKEN}}) or bind to 127.0.0.1:<port>"
            )
        return out

    def _port_clashes(self) -> list[str]:
        """Two enabled listeners on the same port and overlapping addresses (one of them all interfaces, or the
        same host): binding the second would fail at start-up."""
        p = self.receivers.otlp.protocols
        listeners = [
            (f"receivers.otlp.protocols.{n}.endpoint", c.endpoint)
            for n, c in (("http", p.http), ("grpc", p.grpc))
            if c.enabled
        ]
        if self.service.admin.enabled:
            listeners.append(("service.admin.endpoint", self.service.admin.endpoint))
        out: list[str] = []
        seen: list[tuple[str, str, str]] = []
        for key, ep in listeners:
            host, _, port = ep.rpartition(":")
            host = host.strip("[]")
            for other_key, other_host, other_port in seen:
                overlap = (
                    host == other_host
                    or {host, other_host} & {"", "0.0.0.0", "::"}
                    or ("localhost" in (host, other_host) and {host, other_host} <= _LOCALHOST)
                )
                if port == other_port and port != "0" and overlap:
                    out.append(f"{key}: port {port} is already used by {other_key}")
            seen.append((key, host, port))
        return out

    def resolved_tenants(self) -> list[TenantConfig]:
        """The tenants with exporter-level Langfuse defaults filled in.

        With no ``tenants`` section the single ``auth.default_tenant`` tenant is returned, using the exporter
        defaults (embedded default: ``LANGFUSE_BASE_URL`` / ``LANGFUSE_PUBLIC_KEY`` / ``LANGFUSE_SECRET_KEY``).
        """
        lf = self.exporters.langfuse
        tenants = list(self.tenants) or [TenantConfig(name=self.auth.default_tenant)]
        out = []
        for t in tenants:
            merged = LangfuseConfig(
                base_url=t.langfuse.base_url or lf.base_url,
                public_key=t.langfuse.public_key or lf.public_key,
                secret_key=t.langfuse.secret_key or lf.secret_key,
                environment=t.langfuse.environment or lf.environment or self.pipeline.environment,
                release=t.langfuse.release or lf.release or self.pipeline.release,
            )
            share = t.max_spool_size or self.storage.max_spool_size // len(tenants)
            out.append(t.model_copy(update={"langfuse": merged, "max_spool_size": share}))
        return out

    @property
    def data_dir(self) -> Path:
        """The storage directory as a Path."""
        return Path(self.storage.directory)


class ConfigError(Exception):
    """A configuration file that cannot be loaded or validated.

    ``problems`` is a list of human-readable lines, each naming the file, the key path and (when known)
    the line, e.g. ``config.yaml:12: exporters.langfuse.batch.max_spans: Input should be a valid integer``.
    """

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def expand(
    value: Any,
    env: dict[str, str] | None = None,
    base_dir: Path | None = None,
    unset: list[tuple[tuple[Any, ...], str]] | None = None,
    _loc: tuple[Any, ...] = (),
    *,
    missing_files_unset: bool = False,
) -> Any:
    """Recursively expand ``${env:…}`` and ``${file:…}`` references in strings of a parsed YAML tree.

    ``unset``, when given, collects ``(key path, variable)`` for every ``${env:VAR}`` without a default whose
    variable is unset or empty (so ``relay check`` can say which setting it turned off). Raises ``ValueError``
    when a referenced file cannot be read, unless ``missing_files_unset`` (then it counts as unset).
    """
    env = dict(os.environ) if env is None else env
    if isinstance(value, dict):
        return {
            k: expand(v, env, base_dir, unset, _loc + (k,), missing_files_unset=missing_files_unset)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            expand(v, env, base_dir, unset, _loc + (i,), missing_files_unset=missing_files_unset)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        kind, name, default = m.group(1), m.group(2).strip(), m.group(3)
        if kind == "env":
            got = env.get(name, "")
            if not got and default is None and unset is not None:
                unset.append((_loc, name))
            return got if got else (default or "")
        path = Path(name)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            return path.read_text().strip()
        except OSError as e:
            if default is not None:
                return default
            if missing_files_unset:
                return ""
            raise ValueError(f"cannot read ${{file:{name}}}: {e.strerror}") from e

    whole = _EXPAND_RE.fullmatch(value)
    out = _EXPAND_RE.sub(repl, value)
    if whole and out == "":
        return None if whole.group(3) is None else out
    return out


#: Environment variables the embedded defaults read, like the Langfuse SDKs do
#: (https://langfuse.com/docs/observability/sdk/python/setup): key of ``exporters.langfuse`` → variable.
LANGFUSE_ENV = {
    "base_url": "LANGFUSE_BASE_URL",
    "public_key": "LANGFUSE_PUBLIC_KEY",
    "secret_key": "LANGFUSE_SECRET_KEY",
    "environment": "LANGFUSE_TRACING_ENVIRONMENT",
    "release": "LANGFUSE_RELEASE",
}


def _env_defaults(data: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Fill ``exporters.langfuse`` keys the file leaves out from the ``LANGFUSE_*`` environment variables."""
    exporters = data.get("exporters")
    if exporters is None:
        exporters = data["exporters"] = {}
    if not isinstance(exporters, dict):
        return data
    lf = exporters.get("langfuse")
    if lf is None:
        lf = exporters["langfuse"] = {}
    if isinstance(lf, dict):
        for key, var in LANGFUSE_ENV.items():
            if key not in lf and env.get(var):
                lf[key] = env[var]
    return data


def load_config(
    path: str | Path | None,
    env: dict[str, str] | None = None,
    *,
    notes: list[str] | None = None,
    need_receivers: bool = True,
) -> RelayConfig:
    """Load, expand and validate a config file; ``None`` gives the embedded defaults.

    Keys of ``exporters.langfuse`` the file does not set come from ``LANGFUSE_BASE_URL``, ``LANGFUSE_PUBLIC_KEY``,
    ``LANGFUSE_SECRET_KEY``, ``LANGFUSE_TRACING_ENVIRONMENT`` and ``LANGFUSE_RELEASE``. Relative paths
    (``storage.directory``, ``rules.files``, ``ledger.pricing.file``) are relative to the config file's directory.

    ``notes``, when given, receives one line per ``${env:VAR}`` left unset (``file:line: key: ${env:VAR} is unset,
    so this key is not set``). ``need_receivers=False`` is for commands that never notify (``report``,
    ``dead-letters``, ``replay``): when the receivers' settings are invalid (e.g. an unset
    ``${env:SLACK_BOT_TOKEN}``) the config still loads, with every receiver kept by name only, and an unreadable
    ``${file:…}`` secret counts as unset.

    Raises ``ConfigError`` whose ``problems`` name the file, line and key path of every problem: duplicate keys,
    invalid values, and unset ``${env:…}`` references behind an invalid value.
    """
    env = dict(os.environ) if env is None else env
    if path is None:
        return _validate(_env_defaults({}, env), "<defaults>", None)
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from e
    try:
        raw = yaml.safe_load(text) or {}
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {getattr(e, 'problem', e)}"]) from e
    dupes = duplicate_keys(root)
    if dupes:
        raise ConfigError(
            [
                f"{path}:{line}: {key}: repeated key (first at line {first}); YAML would silently keep "
                "only the last one"
                for line, key, first in dupes
            ]
        )
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (receivers, exporters, …)"])
    unset: list[tuple[tuple[Any, ...], str]] = []
    try:
        expanded = expand(raw, env, path.parent, unset, missing_files_unset=not need_receivers)
    except ValueError as e:
        raise ConfigError([f"{path}: {e}"]) from e
    if notes is not None:
        for loc, var in unset:
            notes.append(
                f"{path}:{yaml_line(root, loc)}: {_dotted(loc)}: ${{env:{var}}} is unset, so this key is not set"
            )
    data = _env_defaults(_relative_to(expanded, path.parent), env)
    try:
        return _validate(data, str(path), root, unset)
    except ConfigError as first:
        if need_receivers or not _receivers_named_only(data):
            raise
        try:  # without the receivers' settings (names kept for the references to them)
            return _validate(data, str(path), root, unset)
        except ConfigError:
            raise first from None


def _receivers_named_only(data: dict[str, Any]) -> bool:
    """Strip ``alerting.receivers`` down to their names in ``data``; True when there were receivers."""
    alerting = data.get("alerting")
    if not isinstance(alerting, dict) or not isinstance(alerting.get("receivers"), list):
        return False
    alerting["receivers"] = [{"name": r.get("name")} if isinstance(r, dict) else r for r in alerting["receivers"]]
    return True


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def duplicate_keys(root: yaml.Node | None) -> list[tuple[int, str, int]]:
    """Keys repeated in one YAML mapping anywhere under ``root`` (a ``yaml.compose`` tree), as ``(line, dotted
    key, first line)`` with 1-based lines. PyYAML keeps the last value silently; relay refuses such files."""
    out: list[tuple[int, str, int]] = []

    def walk(node: yaml.Node, loc: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                key = getattr(k, "value", None)
                if isinstance(key, str) and key != "<<":
                    if key in seen:
                        out.append((k.start_mark.line + 1, _dotted(loc + (key,)), seen[key]))
                    else:
                        seen[key] = k.start_mark.line + 1
                walk(v, loc + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, loc + (i,))

    if root is not None:
        walk(root, ())
    return out


def _relative_to(raw: dict, base: Path) -> dict:
    """Make ``storage.directory``, ``rules.files`` (paths or globs) and ``ledger.pricing.file`` relative to the
    config file's directory, like Prometheus' ``rule_files``, so every command finds the same files from any
    working directory (``storage.directory`` defaults to ``data`` next to the config file)."""
    storage = raw.get("storage")
    if storage is None:
        storage = raw["storage"] = {}
    if isinstance(storage, dict):
        d = storage.get("directory")
        if "directory" not in storage:
            storage["directory"] = str(base / "data")
        elif isinstance(d, str) and d and not Path(d).is_absolute():
            storage["directory"] = os.path.normpath(str(base / d))
    rules = raw.get("rules")
    if isinstance(rules, dict) and isinstance(rules.get("files"), list):
        rules["files"] = [
            f if not isinstance(f, str) or Path(f).is_absolute() else str(base / f) for f in rules["files"]
        ]
    pricing = (raw.get("ledger") or {}).get("pricing") if isinstance(raw.get("ledger"), dict) else None
    if isinstance(pricing, dict) and isinstance(pricing.get("file"), str) and not Path(pricing["file"]).is_absolute():
        pricing["file"] = str(base / pricing["file"])
    return raw


_PATH_IN_MESSAGE = re.compile(r"^([A-Za-z_][\w\-]*(?:\[\d+\])*(?:\.[A-Za-z_][\w\-]*(?:\[\d+\])*)+)[ :]")
_SECTIONS = (
    "receivers",
    "exporters",
    "pipeline",
    "storage",
    "auth",
    "tenants",
    "service",
    "ledger",
    "rules",
    "alerting",
    "reports",
)


def _message_loc(msg: str) -> tuple[Any, ...]:
    """The key path a cross-reference message starts with (``route.routes[0].receiver: unknown …`` →
    ``("route", "routes", 0, "receiver")``); empty when it starts with none."""
    m = _PATH_IN_MESSAGE.match(msg)
    if not m:
        return ()
    out: list[Any] = []
    for part in m.group(1).split("."):
        name, *idx = part.split("[")
        out.append(name)
        out += [int(i.rstrip("]")) for i in idx]
    return tuple(out)


def _validate(
    data: dict[str, Any], name: str, root: yaml.Node | None, unset: list[tuple[tuple[Any, ...], str]] | None = None
) -> RelayConfig:
    try:
        return RelayConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see README 'Configuration')"
            parts = [msg]
            if err["type"] == "value_error":  # a model validator's message may hold several problems
                parts = re.split(r"; (?=[A-Za-z_][\w\-]*(?:\[\d+\])*\.[A-Za-z_])", msg.removeprefix("Value error, "))
            for part in parts:
                sub = _message_loc(part)
                full = (sub if not loc or sub[0] in _SECTIONS else loc + sub) if sub else loc
                line = yaml_line(root, full)
                dotted = ".".join(str(p) for p in loc)
                where = f"{name}:{line}" if line else name
                if not dotted:
                    text = f"{where}: {part}" if sub else f"{where}: (top level): {part}"
                else:
                    text = f"{where}: {dotted}: {part}"
                why = [
                    f"{_dotted(u)} is ${{env:{var}}}, which is unset"
                    for u, var in unset or []
                    if loc and u[: len(loc)] == loc
                ]
                if why:
                    text += " (" + "; ".join(why) + ")"
                problems.append(text)
        raise ConfigError(problems) from e
