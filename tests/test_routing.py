"""The routing tree and the ``alerting:`` config: Alertmanager's inheritance, first-match-wins, ``continue``,
group keys, and validation errors."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from relay.alerting.config import AlertingConfig
from relay.alerting.dispatch.routing import Route, format_labels

CONFIG = yaml.safe_load("""
external_url: http://relay.example:8888/
route:
  receiver: default
  group_by: [alertname, team.id]
  group_wait: 10s
  routes:
    - matchers: ['severity="critical"']
      receiver: oncall
      continue: true
      repeat_interval: 1h
    - matchers: ['team.id=~"plat.*"']
      receiver: platform
      group_by: ['...']
      routes:
        - matchers: ['alertname="BudgetExceeded"']
          receiver: finance
          group_interval: 1m
    - matchers: ['team.id="web"']
      receiver: web
receivers:
  - name: default
  - name: oncall
  - name: platform
  - name: finance
  - name: web
inhibit_rules:
  - source_matchers: ['alertname="BudgetExceeded"']
    target_matchers: ['alertname="BudgetWarning"']
    equal: [team.id]
""")


@pytest.fixture
def tree() -> Route:
    return Route(AlertingConfig.model_validate(CONFIG).route)


def receivers(tree: Route, **labels: str) -> list[str]:
    return [r.receiver for r in tree.match(labels)]


def test_first_matching_child_wins_and_unmatched_alerts_stay_at_the_parent(tree):
    assert receivers(tree, alertname="BudgetWarning", **{"team.id": "web"}) == ["web"]
    assert receivers(tree, alertname="BudgetWarning", **{"team.id": "platform"}) == ["platform"]
    assert receivers(tree, alertname="BudgetExceeded", **{"team.id": "platform"}) == ["finance"]
    assert receivers(tree, alertname="BudgetWarning", **{"team.id": "sales"}) == ["default"]
    # matchers see labels only; a missing label is the empty string
    assert receivers(tree, alertname="BudgetWarning") == ["default"]


def test_continue_lets_later_siblings_match_too(tree):
    assert receivers(tree, alertname="X", severity="critical", **{"team.id": "web"}) == ["oncall", "web"]
    assert receivers(tree, alertname="X", severity="critical") == ["oncall"]


def test_children_inherit_unset_settings(tree):
    oncall, platform, web = tree.routes
    finance = platform.routes[0]
    assert (
        tree.opts.group_wait == 10.0 and tree.opts.group_interval == 300.0 and tree.opts.repeat_interval == 4 * 3600.0
    )
    assert oncall.opts.repeat_interval == 3600.0 and oncall.opts.group_wait == 10.0
    assert oncall.opts.group_by == ("alertname", "team.id") and not oncall.opts.group_by_all
    assert platform.opts.group_by_all
    assert finance.opts.group_by_all and finance.opts.group_interval == 60.0 and finance.opts.group_wait == 10.0
    assert finance.opts.repeat_interval == 4 * 3600.0  # from the root, not from the sibling "oncall"
    assert not finance.continue_ and oncall.continue_


def test_defaults_are_alertmanagers():
    r = Route(AlertingConfig.model_validate({"route": {"receiver": "a"}, "receivers": [{"name": "a"}]}).route)
    assert (r.opts.group_wait, r.opts.group_interval, r.opts.repeat_interval) == (30.0, 300.0, 14400.0)
    assert r.opts.group_by == () and r.group_labels({"alertname": "x", "a": "b"}) == {}


def test_group_keys_are_route_path_plus_group_labels_and_stable(tree):
    labels = {"alertname": "BudgetWarning", "team.id": "web", "user": "u1"}
    (web,) = tree.match(labels)
    gl = web.group_labels(labels)
    assert gl == {"alertname": "BudgetWarning", "team.id": "web"}
    assert web.group_key(gl) == '{}/{team.id="web"}:{alertname="BudgetWarning", team.id="web"}'
    # rebuilt from the same config (a restart): same key
    (again,) = Route(AlertingConfig.model_validate(CONFIG).route).match(labels)
    assert again.group_key(again.group_labels(labels)) == web.group_key(gl)
    # group_by ['...']: every label, so one group per alert
    exceeded = {"alertname": "BudgetExceeded", "team.id": "platform", "user": "u1"}
    (finance,) = tree.match(exceeded)
    assert finance.group_labels(exceeded) == exceeded
    assert finance.group_key(exceeded).startswith('{}/{team.id=~"plat.*"}/{alertname="BudgetExceeded"}:{')
    # a group_by label the alert lacks is left out
    assert tree.group_labels({"alertname": "x"}) == {"alertname": "x"}


def test_route_ids_are_unique_even_for_siblings_with_equal_matchers():
    cfg = AlertingConfig.model_validate(
        {
            "route": {"receiver": "a", "routes": [{"receiver": "a", "continue": True}, {"receiver": "b"}]},
            "receivers": [{"name": "a"}, {"name": "b"}],
        }
    )
    first, second = Route(cfg.route).match({"alertname": "x"})
    assert (first.receiver, second.receiver) == ("a", "b")
    assert first.key == second.key == "{}/{}" and first.id != second.id


def test_format_labels_escapes_like_prometheus():
    assert format_labels({"b": 'say "hi"', "a": "x\\y"}) == '{a="x\\\\y", b="say \\"hi\\""}'


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"route": {"receiver": "nope"}, "receivers": [{"name": "a"}]}, "route.receiver: unknown receiver 'nope'"),
        (
            {"route": {"receiver": "a", "routes": [{"receiver": "b"}]}, "receivers": [{"name": "a"}]},
            "route.routes[0].receiver: unknown receiver 'b'",
        ),
        ({"route": {"receiver": "a"}, "receivers": [{"name": "a"}, {"name": "a"}]}, "receiver names must be unique"),
        ({"route": {}, "receivers": [{"name": "a"}]}, "root route must have a receiver"),
        (
            {"route": {"receiver": "a", "matchers": ['x="1"']}, "receivers": [{"name": "a"}]},
            "must not have any matchers",
        ),
        (
            {"route": {"receiver": "a", "routes": [{"matchers": ["x=~("]}]}, "receivers": [{"name": "a"}]},
            "invalid regex",
        ),
        ({"route": {"receiver": "a", "group_by": ["...", "x"]}, "receivers": [{"name": "a"}]}, "wildcard group_by"),
        ({"route": {"receiver": "a", "group_interval": "0s"}, "receivers": [{"name": "a"}]}, "greater than zero"),
        ({"route": {"receiver": "a", "group_wait": "soon"}, "receivers": [{"name": "a"}]}, "invalid duration"),
        ({"route": {"receiver": "a", "mute_time_intervals": ["x"]}, "receivers": [{"name": "a"}]}, "Extra inputs"),
        ({"inhibit_rules": [{"source_matchers": ['a="1"'], "target_matchers": []}]}, "target_matchers"),
    ],
)
def test_invalid_configs_are_rejected_with_the_reason(cfg, message):
    with pytest.raises(ValidationError) as e:
        AlertingConfig.model_validate(cfg)
    assert message in str(e.value)


def test_no_receivers_is_a_valid_config():
    cfg = AlertingConfig.model_validate({})
    assert cfg.receivers == [] and cfg.route.receiver is None
    assert AlertingConfig.model_validate(CONFIG).external_url == "http://relay.example:8888"
