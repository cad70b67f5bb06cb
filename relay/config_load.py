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
from relay.reports.config import ReportsConfig
from relay.usage.config import LedgerConfig
from relay.yaml_lines import yaml_line

__all__ = ["RelayConfig", "ConfigError", "load_config", "expand", "LANGFUSE_ENV"]

_EXPAND_RE = re.compile(r"\$\{(env|file):([^}:]+)(?::-([^}]*))?\}")


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

    @model_validator(mode="after")
    def _check_tenants(self) -> RelayConfig:
        names = [t.name for t in self.tenants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tenant names must be unique; repeated: {', '.join(dupes)}")
        seen: dict[str, str] = {}
        for t in self.tenants:
            for tok in t.tokens:
                v = tok.get_secret_value()
                if v in seen and seen[v] != t.name:
                    raise ValueError(f"a token is shared by tenants {seen[v]!r} and {t.name!r}")
                seen[v] = t.name
        problems = self.reports.problems([r.name for r in self.alerting.receivers],
                                         [t.name for t in self.resolved_tenants()])
        if problems:
            raise ValueError("; ".join(problems))
        return self

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
            out.append(t.model_copy(update={"langfuse": merged}))
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


def expand(value: Any, env: dict[str, str] | None = None, base_dir: Path | None = None) -> Any:
    """Recursively expand ``${env:…}`` and ``${file:…}`` references in strings of a parsed YAML tree.

    Raises ``ValueError`` when a referenced file cannot be read.
    """
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: expand(v, env, base_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env, base_dir) for v in value]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        kind, name, default = m.group(1), m.group(2).strip(), m.group(3)
        if kind == "env":
            got = env.get(name, "")
            return got if got else (default or "")
        path = Path(name)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            return path.read_text().strip()
        except OSError as e:
            if default is not None:
                return default
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


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> RelayConfig:
    """Load, expand and validate a config file; ``None`` gives the embedded defaults.

    Keys of ``exporters.langfuse`` the file does not set come from ``LANGFUSE_BASE_URL``, ``LANGFUSE_PUBLIC_KEY``,
    ``LANGFUSE_SECRET_KEY``, ``LANGFUSE_TRACING_ENVIRONMENT`` and ``LANGFUSE_RELEASE``.
    Raises ``ConfigError`` whose ``problems`` name the file, line and key path of every problem.
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
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (receivers, exporters, …)"])
    try:
        expanded = expand(raw, env, path.parent)
    except ValueError as e:
        raise ConfigError([f"{path}: {e}"]) from e
    return _validate(_env_defaults(_relative_to(expanded, path.parent), env), str(path), root)


def _relative_to(raw: dict, base: Path) -> dict:
    """Make ``rules.files`` (paths or globs) and ``ledger.pricing.file`` relative to the config file's directory,
    like Prometheus' ``rule_files``."""
    rules = raw.get("rules")
    if isinstance(rules, dict) and isinstance(rules.get("files"), list):
        rules["files"] = [f if not isinstance(f, str) or Path(f).is_absolute() else str(base / f) for f in rules["files"]]
    pricing = (raw.get("ledger") or {}).get("pricing") if isinstance(raw.get("ledger"), dict) else None
    if isinstance(pricing, dict) and isinstance(pricing.get("file"), str) and not Path(pricing["file"]).is_absolute():
        pricing["file"] = str(base / pricing["file"])
    return raw


def _validate(data: dict[str, Any], name: str, root: yaml.Node | None) -> RelayConfig:
    try:
        return RelayConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            dotted = ".".join(str(p) for p in loc) or "(top level)"
            line = yaml_line(root, loc)
            where = f"{name}:{line}" if line else name
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see README 'Configuration')"
            problems.append(f"{where}: {dotted}: {msg}")
        raise ConfigError(problems) from e
