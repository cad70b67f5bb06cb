"""The one lifecycle of every long-lived part of relay (receivers, pipeline, exporter, alerting, reports, admin).

Modelled on the OpenTelemetry Collector's ``component.Component`` (``Start(ctx, host)``, ``Shutdown(ctx)``;
https://pkg.go.dev/go.opentelemetry.io/collector/component#Component):

- ``await start()`` — begin work (bind ports, spawn tasks). Raises when the component cannot start (e.g. ``OSError``
  for a port in use); whoever started it then shuts down what already started.
- ``await shutdown(deadline)`` — stop work and release resources by ``deadline``, a :func:`time.monotonic`
  timestamp (work still running then is cancelled; durable state stays where it is for the next start). Safe to
  call on a component that never started or already shut down, and never raises.

``relay.app.Relay`` holds its components in data-flow order (receivers → pipeline → exporter …); it starts them in
reverse order, so nothing produces data before its consumer runs, and shuts them down in order, so producers stop
first.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Sequence

__all__ = ["Component", "deadline_in", "remaining", "start_all", "shutdown_all"]

log = logging.getLogger("relay")


class Component(abc.ABC):
    """A long-lived part of relay with the shared lifecycle (see the module docstring)."""

    #: Name used in logs (``"OTLP/HTTP receiver"``, ``"pipeline"``…).
    name: str = "component"

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin work. Raises when the component cannot start."""

    @abc.abstractmethod
    async def shutdown(self, deadline: float) -> None:
        """Stop by ``deadline`` (:func:`time.monotonic` seconds). Idempotent, safe unstarted, never raises."""


def deadline_in(seconds: float) -> float:
    """The :func:`time.monotonic` timestamp ``seconds`` from now."""
    return time.monotonic() + seconds


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (never negative)."""
    return max(0.0, deadline - time.monotonic())


async def start_all(components: Sequence[Component], deadline_s: float) -> None:
    """Start ``components`` in reverse order (consumers before producers). When one fails, the ones already
    started are shut down (within ``deadline_s`` seconds) and its exception is raised."""
    started: list[Component] = []
    for c in reversed(components):
        try:
            await c.start()
        except BaseException:
            await shutdown_all(list(reversed(started)), deadline_in(deadline_s))
            raise
        started.append(c)


async def shutdown_all(components: Sequence[Component], deadline: float) -> None:
    """Shut ``components`` down in order (producers first), each by ``deadline``. Never raises: a failure is
    logged and the next component still shuts down."""
    for c in components:
        try:
            await c.shutdown(deadline)
        except Exception:
            log.exception("shutting down the %s failed", c.name)
