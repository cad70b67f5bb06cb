"""``relay rules test``: the promtool-like runner (passing and failing cases) and the bundled example rules."""

from __future__ import annotations

import io
from pathlib import Path

from relay.cli.rules import rules_check, rules_test
from tests.test_engine_support import write_rules

REPO = Path(__file__).resolve().parent.parent

RULES = """\
groups:
  - name: g
    rules:
      - alert: SessionCost
        kind: threshold
        group_by: [session]
        field: cost_usd
        window: 1h
        value: 10
        for: 5m
        labels: {severity: warning}
        annotations: {summary: "{{ labels.session }} {{ values.value | usd }}"}
"""


def run(path: str) -> tuple[int, str]:
    out = io.StringIO()
    code = rules_test([path], out, io.StringIO())
    return code, out.getvalue()


def test_example_rules_pass_check_and_their_own_unit_tests():
    files = sorted(str(p) for p in (REPO / "rules").glob("*.yaml"))
    assert len(files) >= 3
    out = io.StringIO()
    assert rules_check(files, out, io.StringIO()) == 0, out.getvalue()
    tests = sorted(str(p) for p in (REPO / "rules" / "tests").glob("*.yaml"))
    assert len(tests) >= 3
    out = io.StringIO()
    assert rules_test(tests, out, io.StringIO()) == 0, out.getvalue()
    assert out.getvalue().count("SUCCESS") == len(tests)


def test_passing_test_with_pending_firing_upgrade_and_retraction(tmp_path):
    write_rules(tmp_path / "r.yaml", RULES)
    t = write_rules(
        tmp_path / "t.yaml",
        """\
        rule_files: [r.yaml]
        evaluation_interval: 30s
        tests:
          - name: pending then firing
            start: 2026-11-02T10:00:00Z
            input_records:
              - {at: 0m, key: a, record: {session_id: s1, cost_usd: 6, cost_source: computed}}
              - {at: 1m, key: a, record: {session_id: s1, cost_usd: 11}}
              - {at: 2m, record: {session_id: s2, cost_usd: 11}}
              - {at: 2026-11-02T10:07:00Z, key: a, retract: true}
            alert_eval:
              - {at: 59s, alertname: SessionCost, expected: []}
              - at: 1m
                alertname: SessionCost
                expected: [{labels: {session: s1, severity: warning}, state: pending}]
              - at: 6m
                alertname: SessionCost
                expected:
                  - labels: {session: s1, severity: warning}
                    annotations: {summary: "s1 $11.00"}
                    values: {value: 11, threshold: 10, count: 1}
              - at: 7m
                alertname: SessionCost
                expected: [{labels: {session: s2, severity: warning}}]
        """,
    )
    code, out = run(t)
    assert code == 0, out
    assert out == f"Unit Testing:  {t}\n  SUCCESS\n\n"  # promtool's words


def test_failing_test_prints_expected_and_got(tmp_path):
    write_rules(tmp_path / "r.yaml", RULES)
    t = write_rules(
        tmp_path / "t.yaml",
        """\
        rule_files: [r.yaml]
        tests:
          - name: wrong expectation
            input_records:
              - {at: 0m, record: {session_id: s1, cost_usd: 20}}
            alert_eval:
              - at: 10m
                alertname: SessionCost
                expected: [{labels: {session: s9, severity: warning}}]
          - name: right expectation
            input_records:
              - {at: 0m, record: {session_id: s1, cost_usd: 20}}
            alert_eval:
              - {at: 4m, alertname: SessionCost, expected: []}
        """,
    )
    code, out = run(t)
    assert code == 1
    # promtool test rules' layout: FAILED once, each failure as alertname/time then exp:/got: label sets
    assert (
        "\n".join(
            [
                "  FAILED:",
                "    name: wrong expectation,",
                "    alertname: SessionCost, time: 10m, ",
                "        exp:[",
                "            0:",
                '              Labels:{alertname="SessionCost", session="s9", severity="warning", tenant="default"}',
                "            ], ",
                "        got:[",
                "            0:",
                '              Labels:{alertname="SessionCost", session="s1", severity="warning", tenant="default"}',
                '              Annotations:{summary="s1 $20.00"}',
                "            ]",
                "",
                "  1 of 2 tests failed",
            ]
        )
        in out
    )


def test_wrong_values_or_annotations_fail(tmp_path):
    write_rules(tmp_path / "r.yaml", RULES)
    t = write_rules(
        tmp_path / "t.yaml",
        """\
        rule_files: [r.yaml]
        tests:
          - name: values
            input_records: [{at: 0m, record: {session_id: s1, cost_usd: 20}}]
            alert_eval:
              - at: 10m
                alertname: SessionCost
                expected: [{labels: {session: s1, severity: warning}, values: {value: 21}}]
          - name: annotations
            input_records: [{at: 0m, record: {session_id: s1, cost_usd: 20}}]
            alert_eval:
              - at: 10m
                alertname: SessionCost
                expected: [{labels: {session: s1, severity: warning}, annotations: {summary: "s1 $21.00"}}]
        """,
    )
    code, out = run(t)
    assert code == 1 and "2 of 2 tests failed" in out


def test_invalid_test_files_and_rule_files_are_reported(tmp_path):
    t = write_rules(tmp_path / "t.yaml", "rule_files: [nope.yaml]\ntests: []\n")
    code, out = run(t)
    assert code == 1 and f"FAILED: rule files are invalid:\n    {tmp_path}/nope.yaml: no such rule file" in out
    write_rules(tmp_path / "r.yaml", RULES)
    t = write_rules(
        tmp_path / "t2.yaml",
        """\
        rule_files: [r.yaml]
        tests:
          - input_records: [{at: 0m, record: {session_id: s1, price: 3}}]
            alert_eval: [{at: 1m, alertname: SessionCost, expected: [{state: resolved}]}]
        """,
    )
    code, out = run(t)
    assert code == 1 and "tests.0.alert_eval.0.expected.0.state: Value error, must be firing or pending" in out
    t = write_rules(
        tmp_path / "t3.yaml",
        """\
        rule_files: [r.yaml]
        tests:
          - input_records: [{at: 0m, record: {session_id: s1, price: 3}}]
        """,
    )
    code, out = run(t)
    assert code == 1 and "invalid test: unknown record field(s): price" in out
