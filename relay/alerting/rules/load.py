"""Loading rule files into a :class:`RuleSet`: glob expansion, YAML with line numbers, schema validation, matcher
and template compilation, and error messages that name the file, line, group, rule and field, e.g.::

    rules/budgets.yaml:12: group "budgets", rule "TeamMonthlyBudget": thresholds.1.percent: must be > 0

All problems of all files are collected and raised together as :class:`RulesError`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from pydantic import BaseModel, ValidationError

from relay.alerting.rules.schema import (
    RULE_KINDS,
    VALUE_NAMES,
    BudgetRule,
    ErrorRateRule,
    RuleFileModel,
    RuleGroupModel,
    RuleModel,
    ScoreRule,
    SpikeRule,
    ThresholdRule,
    WindowSpec,
)
from relay.alerting.rules.templates import TemplateError, compile_template, explain, render
from relay.matchers import Matcher
from relay.yaml_lines import yaml_line

#: libyaml's safe loader when PyYAML was built with it (much faster over 1,000 rules), else the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = ["Rule", "RuleSet", "RulesError", "expand_paths", "load_rule_file"]

_FIELD_MSG = re.compile(r"^([a-z_][a-z0-9_.]*): (.+)$", re.S)


class RulesError(Exception):
    """Rule files that cannot be used. ``problems``: one line per problem, each naming the file (and line), group,
    rule and field."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(eq=False)
class Rule:
    """One validated rule, ready for the engine.

    ``id`` is ``<file>:<alert>`` (unique within a RuleSet; ``Alert.rule``); ``file`` the path as loaded; ``group``
    the group name; ``interval`` the group's periodic evaluation interval in seconds (None: the engine default);
    ``model`` the pydantic model; ``matchers`` the parsed record matchers, ``error_matchers`` an error-rate rule's
    failure matchers; ``templates`` the compiled annotations.
    """

    id: str
    file: str
    group: str
    interval: float | None
    model: RuleModel
    matchers: tuple[Matcher, ...]
    error_matchers: tuple[Matcher, ...] = ()
    templates: dict[str, jinja2.Template] = field(default_factory=dict)
    line: int | None = None

    @property
    def name(self) -> str:
        """The ``alertname``."""
        return self.model.alert

    @property
    def kind(self) -> str:
        """``budget``, ``error_rate``, ``threshold`` or ``spike``."""
        return self.model.kind

    @property
    def for_s(self) -> float:
        """The ``for:`` duration in seconds."""
        return self.model.for_

    @property
    def window(self) -> WindowSpec:
        """The rule's window."""
        return self.model.window

    def agg_key(self) -> str:
        """Identity of the rule's aggregation state (what it selects, groups and sums over which window): two rules
        with the same key can share window data, so a reload that only changes thresholds, ``for``, labels or
        annotations keeps the data and the alerts."""
        m = self.model
        spec: dict[str, Any] = {
            "kind": m.kind,
            "matchers": sorted(str(x) for x in self.matchers),
            "group_by": list(m.group_by),
            "window": m.window.model_dump(),
        }
        if isinstance(m, ErrorRateRule):
            spec["errors"] = m.errors.model_dump()
            spec["error_matchers"] = sorted(str(x) for x in self.error_matchers)
        elif isinstance(m, ThresholdRule):
            spec["field"] = m.field
            spec["values"] = m.aggregate in ("min", "max", "p50", "p90", "p95", "p99")
        elif isinstance(m, SpikeRule):
            spec["field"] = m.field
            spec["baseline"] = m.baseline.windows
        elif isinstance(m, ScoreRule):
            spec["score"] = m.score
            spec["values"] = m.aggregate in ("min", "max", "p50", "p90", "p95", "p99")
            spec["match"] = m.match.model_dump() if m.match else None
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def definition_key(self) -> str:
        """Hash of the whole definition (for "did this rule change")."""
        dump = self.model.model_dump(mode="json", by_alias=True)
        text = json.dumps([self.id, self.group, self.interval, dump], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class RuleSet:
    """The rules of a set of files. ``files`` are the expanded paths that were read."""

    rules: list[Rule] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, paths: Iterable[str], base_dir: str | Path | None = None) -> RuleSet:
        """Load every file matched by ``paths`` (paths or globs, relative to ``base_dir`` when given). Raises
        :class:`RulesError` with every problem found (a missing plain path, YAML errors, schema errors)."""
        files, problems = expand_paths(paths, base_dir)
        rules: list[Rule] = []
        for f in files:
            got, errs = load_rule_file(f)
            rules.extend(got)
            problems.extend(errs)
        if problems:
            raise RulesError(problems)
        return cls(rules, files)

    def by_id(self) -> dict[str, Rule]:
        """``rule id`` → rule."""
        return {r.id: r for r in self.rules}


def expand_paths(paths: Iterable[str], base_dir: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Expand paths and globs (``*``, ``?``, ``[…]``, ``**``) into sorted, de-duplicated file paths; returns
    ``(files, problems)`` — a plain path that does not exist is a problem, a glob matching nothing is not."""
    files: list[str] = []
    problems: list[str] = []
    for p in paths:
        full = p if base_dir is None or os.path.isabs(p) else os.path.join(str(base_dir), p)
        if glob.has_magic(full):
            matched = sorted(x for x in glob.glob(full, recursive=True) if os.path.isfile(x))
        elif os.path.isfile(full):
            matched = [full]
        else:
            problems.append(f"{full}: no such rule file")
            matched = []
        for m in matched:
            if m not in files:
                files.append(m)
    return files, problems


def load_rule_file(path: str) -> tuple[list[Rule], list[str]]:
    """Parse and validate one rule file; returns ``(rules, problems)``. Never raises for bad content."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        return [], [f"{path}: cannot read: {e.strerror}"]
    try:
        root = yaml.compose(text, Loader=_LOADER)  # one parse: the data is constructed from the node tree
        data = _LOADER(text).construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        return [], [f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}"]
    problems = [f"{path}:{line}: duplicate key {key!r}" for line, key in _duplicate_keys(root)]
    if data is None:
        return [], problems
    if not isinstance(data, dict):
        return [], problems + [f"{path}:1: the top level must be a mapping with 'groups'"]
    top = _validate(RuleFileModel, data, path, root, (), "")
    if isinstance(top, list):
        return [], problems + top
    rules: list[Rule] = []
    seen_groups: set[str] = set()
    seen_alerts: dict[str, int | None] = {}
    for gi, gdata in enumerate(top.groups):
        gloc: tuple[Any, ...] = ("groups", gi)
        if not isinstance(gdata, dict):
            problems.append(f"{_where(path, root, gloc)}: groups.{gi}: must be a mapping with 'name' and 'rules'")
            continue
        gname = str(gdata.get("name", f"#{gi}"))
        group = _validate(RuleGroupModel, gdata, path, root, gloc, f'group "{gname}": ')
        if isinstance(group, list):
            problems.extend(group)
            continue
        if group.name in seen_groups:
            problems.append(f'{_where(path, root, gloc + ("name",))}: group "{group.name}": name: repeated group name')
        seen_groups.add(group.name)
        for ri, rdata in enumerate(group.rules):
            rloc = gloc + ("rules", ri)
            rule, errs = _load_rule(path, root, rloc, group, rdata, ri)
            problems.extend(errs)
            if rule is None:
                continue
            if rule.name in seen_alerts:
                problems.append(
                    f'{_where(path, root, rloc + ("alert",))}: group "{group.name}", rule "{rule.name}": '
                    f"alert: duplicate alert name in this file (first at line {seen_alerts[rule.name]})"
                )
                continue
            seen_alerts[rule.name] = rule.line
            rules.append(rule)
    return rules, problems


# ---------------------------------------------------------------------------------------------------- internals


def _load_rule(
    path: str, root: yaml.Node, loc: tuple[Any, ...], group: RuleGroupModel, data: Any, index: int
) -> tuple[Rule | None, list[str]]:
    if not isinstance(data, dict):
        return None, [f'{_where(path, root, loc)}: group "{group.name}": rules.{index}: must be a mapping']
    name = data.get("alert")
    prefix = f'group "{group.name}", rule "{name}": ' if name else f'group "{group.name}", rules.{index}: '
    kind = data.get("kind")
    cls = RULE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        what = "missing" if kind is None else f"unknown kind {kind!r}"
        return None, [
            f"{_where(path, root, loc + ('kind',))}: {prefix}kind: {what}; use one of {', '.join(RULE_KINDS)}"
        ]
    model = _validate(cls, data, path, root, loc, prefix)
    if isinstance(model, list):
        return None, model
    problems: list[str] = []
    matchers = _matchers(model.matchers, path, root, loc + ("matchers",), prefix, "matchers", problems)
    error_matchers: list[Matcher] = []
    if isinstance(model, ErrorRateRule):
        error_matchers = _matchers(
            model.errors.matchers, path, root, loc + ("errors", "matchers"), prefix, "errors.matchers", problems
        )
        for i, m in enumerate(matchers):
            if m.name == "kind":
                problems.append(
                    f"{_where(path, root, loc + ('matchers', i))}: {prefix}matchers.{i}: do not match on "
                    "'kind' in an error_rate rule; errors.kind selects the calls"
                )
    templates: dict[str, jinja2.Template] = {}
    for key, text in model.annotations.items():
        try:
            templates[key] = compile_template(text)
        except TemplateError as e:
            problems.append(
                f"{_where(path, root, loc + ('annotations', key))}: {prefix}annotations.{key}: "
                f"template error: {explain(e)}"
            )
    rule = Rule(
        id=f"{path}:{model.alert}",
        file=path,
        group=group.name,
        interval=group.interval,
        model=model,
        matchers=tuple(matchers),
        error_matchers=tuple(error_matchers),
        templates=templates,
        line=yaml_line(root, loc),
    )
    for key, tpl in templates.items():
        ctx = sample_context(rule)
        try:
            render(tpl, ctx)
        except Exception as e:
            problems.append(
                f"{_where(path, root, loc + ('annotations', key))}: {prefix}annotations.{key}: "
                f"template error: {explain(e, ctx)}"
            )
    return (None if problems else rule), problems


def sample_context(rule: Rule) -> dict[str, Any]:
    """A template context with every label and value name the rule's alerts can have (placeholder values)."""
    labels = {"alertname": rule.name, "tenant": "tenant", "severity": "warning", **rule.model.labels}
    for name in rule.model.group_by:
        labels[name] = name
    if isinstance(rule.model, BudgetRule):
        labels["threshold"] = "100"
    values = {k: 1.0 for k in VALUE_NAMES[rule.kind]}
    return {"labels": labels, "values": values, "value": 1.0, "rule": rule_context(rule)}


def rule_context(rule: Rule) -> dict[str, Any]:
    """The ``rule`` object of a template context."""
    return {
        "name": rule.name,
        "kind": rule.kind,
        "group": rule.group,
        "file": rule.file,
        "id": rule.id,
        "window": rule.window.describe(),
        "for": rule.for_s,
    }


def _matchers(
    items: Sequence[str],
    path: str,
    root: yaml.Node,
    loc: tuple[Any, ...],
    prefix: str,
    field_: str,
    problems: list[str],
) -> list[Matcher]:
    out = []
    for i, text in enumerate(items):
        try:
            out.append(Matcher.parse(text))
        except ValueError as e:
            problems.append(f"{_where(path, root, loc + (i,))}: {prefix}{field_}.{i}: {e}")
    return out


def _validate(cls: type[BaseModel], data: Any, path: str, root: yaml.Node, base: tuple[Any, ...], prefix: str) -> Any:
    """``cls.model_validate(data)`` or a list of problems with file:line, prefix and dotted field path."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        out = []
        for err in e.errors():
            loc = tuple(err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            m = _FIELD_MSG.match(msg)
            if m and isinstance(data, dict):  # a model-level check naming its field: point at that field
                field_loc = tuple(int(p) if p.isdigit() else p for p in m.group(1).split("."))
                if yaml_line(root, base + loc + field_loc[:1]) != yaml_line(root, base + loc):
                    loc, msg = loc + field_loc, m.group(2)
            dotted = ".".join(str(p) for p in loc) or (
                "(rule)" if "rule" in prefix else "(group)" if prefix else "(top level)"
            )
            out.append(f"{_where(path, root, base + loc)}: {prefix}{dotted}: {msg}")
        return out


def _where(path: str, root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    line = yaml_line(root, loc)
    return f"{path}:{line}" if line else path


def _duplicate_keys(node: yaml.Node | None) -> list[tuple[int, str]]:
    """``(line, key)`` of every repeated key in a mapping (PyYAML silently keeps the last one)."""
    out: list[tuple[int, str]] = []
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                kv = getattr(k, "value", None)
                if isinstance(kv, str):
                    if kv in seen:
                        out.append((k.start_mark.line + 1, kv))
                    seen.add(kv)
                stack.append(v)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return sorted(out)
