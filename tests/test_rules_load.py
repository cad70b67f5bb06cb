"""Rule files: schema validation with errors naming file, line, group, rule and field; globs; templates;
``relay rules check``."""

from __future__ import annotations

import io
import textwrap

import pytest

from relay.alerting.rules.load import RulesError, RuleSet, expand_paths
from relay.alerting.rules.schema import RulesConfig, format_duration, parse_rule_duration
from relay.alerting.rules.templates import FILTERS
from relay.cli.rules import rules_check
from tests.test_engine_support import write_rules

GOOD = """\
groups:
  - name: budgets
    interval: 30s
    rules:
      - alert: TeamBudget
        kind: budget
        matchers: ['team.id=~"p.*"', 'kind="llm"']
        group_by: [team.id]
        limit_usd: 100
        window: {calendar: month, timezone: Europe/Berlin}
        thresholds: [{percent: 80, severity: warning}, {percent: 100, severity: critical}]
        for: 1m30s
        annotations:
          summary: '{{ labels["team.id"] }}: {{ values.spend | usd }}'
"""


def load_problems(tmp_path, text: str, name: str = "r.yaml") -> list[str]:
    path = write_rules(tmp_path / name, text)
    with pytest.raises(RulesError) as e:
        RuleSet.load([path])
    return [p.replace(str(tmp_path) + "/", "") for p in e.value.problems]


def test_valid_file_loads_with_ids_intervals_and_parsed_fields(tmp_path):
    path = write_rules(tmp_path / "b.yaml", GOOD)
    rs = RuleSet.load([path])
    (r,) = rs.rules
    assert r.id == f"{path}:TeamBudget" and r.group == "budgets" and r.interval == 30.0
    assert r.for_s == 90.0 and r.kind == "budget" and r.line == 5
    assert [str(m) for m in r.matchers] == ['team.id=~"p.*"', 'kind="llm"']
    assert r.window.describe() == "month (Europe/Berlin)"
    assert rs.files == [path]


def test_agg_key_ignores_thresholds_labels_and_annotations_but_not_matchers(tmp_path):
    a = RuleSet.load([write_rules(tmp_path / "a.yaml", GOOD)]).rules[0]
    changed = GOOD.replace("percent: 80", "percent: 70").replace("limit_usd: 100", "limit_usd: 200")
    b = RuleSet.load([write_rules(tmp_path / "b.yaml", changed.replace("for: 1m30s", "for: 5m"))]).rules[0]
    c = RuleSet.load([write_rules(tmp_path / "c.yaml", GOOD.replace("p.*", "q.*"))]).rules[0]
    assert a.agg_key() == b.agg_key() != c.agg_key()
    assert a.definition_key() != b.definition_key()


def test_errors_name_file_line_group_rule_and_field(tmp_path):
    problems = load_problems(
        tmp_path,
        """\
        groups:
          - name: budgets
            rules:
              - alert: TeamBudget
                kind: budget
                limit_usd: 100
                window: {calendar: month, timezone: Mars/Olympus}
                thresholds:
                  - {percent: 80}
                  - {percent: 0, severity: fatal}
                colour: red
              - alert: Slow
                kind: threshold
                field: ttft_ms
                aggregate: p97
                window: 5 minutes
                value: 8000
              - alert: Odd
                kind: forecast
        """,
    )
    assert problems == [
        'r.yaml:7: group "budgets", rule "TeamBudget": window.timezone: unknown timezone \'Mars/Olympus\' '
        "(use an IANA name such as Europe/Berlin or UTC)",
        'r.yaml:10: group "budgets", rule "TeamBudget": thresholds.1.percent: Input should be greater than 0',
        'r.yaml:10: group "budgets", rule "TeamBudget": thresholds.1.severity: '
        "Input should be 'info', 'warning' or 'critical'",
        'r.yaml:11: group "budgets", rule "TeamBudget": colour: unknown key',
        'r.yaml:15: group "budgets", rule "Slow": aggregate: '
        "Input should be 'count', 'sum', 'avg', 'min', 'max', 'p50', 'p90', 'p95' or 'p99'",
        'r.yaml:16: group "budgets", rule "Slow": window.rolling: invalid duration \'5 minutes\': '
        "use a number of seconds or e.g. '500ms', '30s', '5m', '1h30m', '7d'",
        'r.yaml:19: group "budgets", rule "Odd": kind: unknown kind \'forecast\'; use one of budget, error_rate, '
        "threshold, spike, score",
    ]


def test_matchers_templates_and_cross_field_rules_are_checked(tmp_path):
    problems = load_problems(
        tmp_path,
        """\
        groups:
          - name: g
            rules:
              - alert: BadMatcher
                kind: budget
                matchers: ['team.id=~"("', 'team']
                limit_usd: 1
                window: 1h
              - alert: BadTemplate
                kind: budget
                limit_usd: 1
                window: 1h
                annotations:
                  summary: "{{ values.spend | usd "
                  description: "{{ labels.team }}"
              - alert: RollingForecast
                kind: budget
                limit_usd: 1
                window: 7d
                forecast: {enabled: true}
              - alert: CalendarSpike
                kind: spike
                window: {calendar: day}
                threshold: 3
              - alert: KindInErrorRate
                kind: error_rate
                matchers: ['kind="tool"']
                window: 10m
                ratio: 0.1
              - alert: NoCondition
                kind: error_rate
                window: 10m
              - alert: Reserved
                kind: threshold
                group_by: [tenant]
                field: records
                window: 1h
                value: 1
        """,
    )
    assert problems[0].startswith('r.yaml:6: group "g", rule "BadMatcher": matchers.0: invalid regex')
    assert problems[1].startswith('r.yaml:6: group "g", rule "BadMatcher": matchers.1: bad matcher')
    assert problems[2].startswith('r.yaml:14: group "g", rule "BadTemplate": annotations.summary: template error:')
    assert problems[3].startswith(
        'r.yaml:15: group "g", rule "BadTemplate": annotations.description: template error: '
        "no label or value named 'team'"
    )
    assert problems[4:] == [
        'r.yaml:20: group "g", rule "RollingForecast": forecast: needs a calendar window '
        "(a rolling window has no end to project to)",
        'r.yaml:23: group "g", rule "CalendarSpike": window: a spike rule needs a rolling window (e.g. 1h)',
        'r.yaml:27: group "g", rule "KindInErrorRate": matchers.0: do not match on \'kind\' in an error_rate rule; '
        "errors.kind selects the calls",
        "r.yaml:30: group \"g\", rule \"NoCondition\": (rule): set 'ratio' (failed/total above it) and/or 'count' "
        "(at least this many failures)",
        'r.yaml:35: group "g", rule "Reserved": group_by: \'tenant\' is set by the engine and cannot be grouped by',
    ]


def test_undefined_template_variables_are_caught_at_check_time(tmp_path):
    problems = load_problems(
        tmp_path,
        """\
        groups:
          - name: g
            rules:
              - alert: A
                kind: budget
                group_by: [user]
                limit_usd: 1
                window: 1h
                annotations:
                  ok: "{{ labels.user }} {{ labels.tenant }} {{ labels.threshold }} {{ values.forecast }}
                       {{ rule.window }}"
                  summary: "{{ labels.team }}"
                  description: "{{ values.ratio }}"
        """,
    )
    assert [p.split(" — ")[0] for p in problems] == [  # in plain words, not Jinja's
        'r.yaml:12: group "g", rule "A": annotations.summary: template error: no label or value named \'team\'',
        'r.yaml:13: group "g", rule "A": annotations.description: template error: no label or value named \'ratio\'',
    ]
    assert "labels here: alertname, severity, tenant, threshold, user" in problems[0]


def test_duplicates_and_yaml_errors(tmp_path):
    problems = load_problems(
        tmp_path,
        """\
        groups:
          - name: g
            rules:
              - {alert: A, kind: budget, limit_usd: 1, window: 1h}
              - {alert: A, kind: budget, limit_usd: 2, window: 1h}
          - name: g
            rules: []
            rules: []
        """,
    )
    assert problems == [
        "r.yaml:8: duplicate key 'rules'",
        'r.yaml:5: group "g", rule "A": alert: duplicate alert name in this file (first at line 4)',
        'r.yaml:6: group "g": name: repeated group name',
    ]
    assert load_problems(tmp_path, "groups: [\n  {name: x\n", "y.yaml")[0].startswith("y.yaml:3: invalid YAML")
    assert load_problems(tmp_path, "- a\n- b\n", "z.yaml") == [
        "z.yaml:1: the top level must be a mapping with 'groups'"
    ]
    assert load_problems(tmp_path, "group: []\n", "w.yaml") == ["w.yaml:1: group: unknown key"]


def test_paths_and_globs_relative_to_a_base_dir(tmp_path):
    (tmp_path / "rules").mkdir()
    write_rules(tmp_path / "rules" / "a.yaml", GOOD)
    write_rules(tmp_path / "rules" / "b.yaml", GOOD)
    files, problems = expand_paths(["rules/*.yaml", "rules/a.yaml", "none/*.yaml"], tmp_path)
    assert files == [str(tmp_path / "rules" / "a.yaml"), str(tmp_path / "rules" / "b.yaml")] and problems == []
    files, problems = expand_paths(["rules/missing.yaml"], tmp_path)
    assert files == [] and problems == [f"{tmp_path}/rules/missing.yaml: no such rule file"]
    rs = RuleSet.load(["rules/*.yaml"], base_dir=tmp_path)
    assert len(rs.rules) == 2 and len({r.id for r in rs.rules}) == 2  # same alert name in two files: two rules


def test_empty_file_and_no_files_give_an_empty_ruleset(tmp_path):
    assert RuleSet.load([write_rules(tmp_path / "e.yaml", "")]).rules == []
    assert RuleSet.load([]).rules == []


def test_durations():
    assert parse_rule_duration("1h30m") == 5400 and parse_rule_duration("250ms") == 0.25
    assert parse_rule_duration("2w") == 1_209_600 and parse_rule_duration(45) == 45.0
    assert parse_rule_duration("1.5h") == 5400
    assert parse_rule_duration("1 h") == 3600  # spaces are ignored, as in the rest of the config
    for bad in ("h", "-5m", "5x", "", True, -1):
        with pytest.raises(ValueError):
            parse_rule_duration(bad)
    assert [format_duration(x) for x in (0, 0.25, 90, 5400, 86400 * 8)] == ["0s", "250ms", "1m30s", "1h30m", "8d"]


def test_rules_config_defaults_and_validation():
    c = RulesConfig.model_validate({"files": ["rules/*.yaml"], "evaluation_interval": "15s"})
    assert c.evaluation_interval == 15.0 and c.resend_interval == 60.0 and c.watch is True
    with pytest.raises(ValueError):
        RulesConfig.model_validate({"evaluation_interval": 0})
    with pytest.raises(ValueError):
        RulesConfig.model_validate({"file": ["x"]})


def test_template_filters():
    f = FILTERS
    assert f["usd"](1234.5) == "$1,234.50" and f["usd"](0.0042) == "$0.0042" and f["usd"](-3) == "-$3.00"
    assert f["percent"](82.44) == "82.4%" and f["ratio"](0.0512) == "5.1%"
    assert f["duration"](5400) == "1h30m" and f["humanize"](1_234_567) == "1.23M" and f["humanize"](0.5) == "0.5"
    assert f["datetime"](1_793_487_600, "Europe/Berlin") == "2026-11-01 00:00 CET"
    assert f["datetime"](float("inf")) == "never"


def test_rules_check_cli(tmp_path):
    good = write_rules(tmp_path / "good.yaml", GOOD)
    out, err = io.StringIO(), io.StringIO()
    assert rules_check([good], out, err) == 0
    assert (
        out.getvalue()
        == textwrap.dedent(f"""\
        {good}: OK (1 rule in 1 group)
          budgets/TeamBudget: budget over month (Europe/Berlin), for 1m30s
        """)
        and err.getvalue() == ""
    )
    bad = write_rules(tmp_path / "bad.yaml", GOOD.replace("limit_usd: 100", "limit_usd: -1"))
    out, err = io.StringIO(), io.StringIO()
    assert rules_check([good, bad], out, err) == 1
    assert f'{bad}:9: group "budgets", rule "TeamBudget": limit_usd: Input should be greater than 0' in err.getvalue()
    assert "good.yaml: OK" in out.getvalue()
    assert rules_check([str(tmp_path / "nothing-*.yaml")], io.StringIO(), io.StringIO()) == 1
