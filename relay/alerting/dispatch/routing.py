"""The routing tree: which route (receiver, grouping, timers) an alert goes to, and its aggregation group key.

Semantics of Alertmanager's ``dispatch/route.go`` (see
https://prometheus.io/docs/alerting/latest/configuration/#route): a route matches when all its matchers match the
alert's labels; matching descends depth-first into the children, the **first matching child wins** unless it has
``continue: true`` (then later siblings are tried too); a route none of whose children match handles the alert
itself. The root route matches every alert. Children inherit unset options from their parent.

Group keys follow Alertmanager: ``<route key>:<group labels>``, where the route key is the path of matcher sets
from the root (``{}/{team="a"}``) and the group labels are printed like a Prometheus label set
(``{alertname="BudgetWarning", team.id="x"}``). They depend only on the config and the labels, so they are stable
across restarts (the notification log and the notifiers' per-group state are keyed by them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from relay.alerting.config import (
    DEFAULT_GROUP_INTERVAL,
    DEFAULT_GROUP_WAIT,
    DEFAULT_REPEAT_INTERVAL,
    GROUP_BY_ALL,
    RouteConfig,
)
from relay.matchers import Matcher, matches_all, parse_matchers

__all__ = ["RouteOpts", "Route", "format_labels"]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def format_labels(labels: Mapping[str, str]) -> str:
    """A label set as Prometheus prints it: ``{a="1", b="2"}``, sorted by name, values quoted and escaped."""
    return "{" + ", ".join(f"{k}={_quote(labels[k])}" for k in sorted(labels)) + "}"


@dataclass(frozen=True)
class RouteOpts:
    """A route's effective options after inheritance. ``receiver`` is None only when no receivers exist;
    ``group_by`` is the tuple of grouping label names (ignored when ``group_by_all``); timers are seconds."""

    receiver: str | None
    group_by: tuple[str, ...]
    group_by_all: bool
    group_wait: float
    group_interval: float
    repeat_interval: float


class Route:
    """A node of the routing tree built from a :class:`~relay.alerting.config.RouteConfig`.

    ``key`` is Alertmanager's route key (matcher sets from the root, ``/``-separated); ``id`` additionally has
    the child index at each level, so it is unique even for siblings with equal matchers.
    """

    opts: RouteOpts

    def __init__(self, config: RouteConfig, parent: Route | None = None, index: int = 0):
        self.parent = parent
        self.matchers: list[Matcher] = sorted(parse_matchers(config.matchers), key=lambda m: (m.name, m.op, m.value))
        self.continue_ = config.continue_
        p = parent.opts if parent is not None else None
        group_by = (
            config.group_by
            if config.group_by is not None
            else (None if p is None else ([GROUP_BY_ALL] if p.group_by_all else list(p.group_by)))
        )
        group_by = group_by or []
        self.opts = RouteOpts(
            receiver=config.receiver if config.receiver is not None else (p.receiver if p else None),
            group_by=tuple(x for x in group_by if x != GROUP_BY_ALL),
            group_by_all=GROUP_BY_ALL in group_by,
            group_wait=_pick(config.group_wait, p.group_wait if p else None, DEFAULT_GROUP_WAIT),
            group_interval=_pick(config.group_interval, p.group_interval if p else None, DEFAULT_GROUP_INTERVAL),
            repeat_interval=_pick(config.repeat_interval, p.repeat_interval if p else None, DEFAULT_REPEAT_INTERVAL),
        )
        own = "{" + ",".join(str(m) for m in self.matchers) + "}"
        self.key: str = own if parent is None else f"{parent.key}/{own}"
        self.id: str = own if parent is None else f"{parent.id}/{own}/{index}"
        self.routes: list[Route] = [Route(c, self, i) for i, c in enumerate(config.routes)]

    @property
    def receiver(self) -> str | None:
        """The receiver's name (None when no receivers are configured)."""
        return self.opts.receiver

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes that handle an alert with ``labels``: depth-first, the first matching child wins unless it
        has ``continue``; this route itself when no child matches. Empty when this route's matchers do not
        match."""
        if not matches_all(self.matchers, labels):
            return []
        out: list[Route] = []
        for child in self.routes:
            got = child.match(labels)
            out.extend(got)
            if got and not child.continue_:
                break
        return out or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The alert's labels this route groups by (all of them with ``group_by: ['...']``; names the alert
        lacks are left out, as in Alertmanager)."""
        if self.opts.group_by_all:
            return dict(labels)
        return {k: labels[k] for k in self.opts.group_by if k in labels}

    def group_key(self, group_labels: Mapping[str, str]) -> str:
        """The aggregation group key: ``<route key>:<group labels>``, e.g.
        ``{}/{severity="critical"}:{alertname="BudgetExceeded", team.id="x"}``."""
        return f"{self.key}:{format_labels(group_labels)}"

    def walk(self) -> Iterator[Route]:
        """This route and all its descendants, depth-first."""
        yield self
        for child in self.routes:
            yield from child.walk()

    def __repr__(self) -> str:
        return f"Route({self.id!r}, receiver={self.receiver!r})"


def _pick(own: float | None, inherited: float | None, default: float) -> float:
    if own is not None:
        return own
    return inherited if inherited is not None else default
