"""Inhibition: a firing alert mutes other alerts (Alertmanager ``inhibit_rules``,
https://prometheus.io/docs/alerting/latest/configuration/#inhibit_rule).

While an alert matching a rule's ``source_matchers`` is firing, every alert matching its ``target_matchers`` whose
``equal`` labels carry the same values as the source's (a missing label equals the empty string) is muted — e.g. a
``BudgetExceeded`` (100 %) alert mutes the ``BudgetWarning`` (80 %) alert of the same team, not of other teams.

As in Alertmanager's ``inhibit/inhibit.go``: only firing alerts inhibit; when the target also matches the source
matchers, only sources that do not themselves match the target matchers count (so an alert never inhibits itself
and two alerts matching both sides do not mute each other); a silenced source still inhibits.
Source: https://prometheus.io/docs/alerting/latest/configuration/#inhibit_rule
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from relay.alert import Alert, AlertState
from relay.alerting.config import InhibitRuleConfig
from relay.matchers import Matcher, matches_all, parse_matchers

__all__ = ["InhibitRule", "Inhibitor"]


class InhibitRule:
    """One inhibition rule with its cache of firing source alerts (fingerprint → labels)."""

    def __init__(self, config: InhibitRuleConfig):
        self.source: list[Matcher] = parse_matchers(config.source_matchers)
        self.target: list[Matcher] = parse_matchers(config.target_matchers)
        self.equal: tuple[str, ...] = tuple(config.equal)
        self.sources: dict[str, dict[str, str]] = {}

    def inhibited_by(self, labels: Mapping[str, str]) -> str | None:
        """The fingerprint of a firing source alert that mutes an alert with ``labels``, or None."""
        if not matches_all(self.target, labels):
            return None
        two_sided = matches_all(self.source, labels)
        for fp, src in self.sources.items():
            if any(src.get(n, "") != labels.get(n, "") for n in self.equal):
                continue
            if two_sided and matches_all(self.target, src):
                continue
            return fp
        return None


class Inhibitor:
    """Evaluates inhibition rules against the firing alerts it was told about with :meth:`update`."""

    def __init__(self, rules: Iterable[InhibitRuleConfig]):
        self.rules = [InhibitRule(r) for r in rules]

    def update(self, alerts: Iterable[Alert]) -> None:
        """Record alert state changes: firing alerts become sources of the rules they match; resolved and
        pending ones stop inhibiting."""
        for a in alerts:
            fp = a.fingerprint
            for rule in self.rules:
                if a.state is AlertState.FIRING and matches_all(rule.source, a.labels):
                    rule.sources[fp] = dict(a.labels)
                else:
                    rule.sources.pop(fp, None)

    def inhibited_by(self, labels: Mapping[str, str]) -> list[str]:
        """Fingerprints of the firing alerts that inhibit an alert with ``labels`` (one per matching rule, empty
        when it is not inhibited)."""
        out = []
        for rule in self.rules:
            fp = rule.inhibited_by(labels)
            if fp is not None and fp not in out:
                out.append(fp)
        return out
