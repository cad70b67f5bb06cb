"""Render a :class:`~relay.reports.model.Report` as JSON. (CSV is the tidy table of
:mod:`relay.reports.usage_table`: one row per period × group, numbers only.)"""

from __future__ import annotations

import json

from relay.reports.model import Report

__all__ = ["render_json"]


def render_json(r: Report) -> str:
    """The report as indented JSON (:meth:`Report.to_dict`; ``null`` for missing figures)."""
    return json.dumps(r.to_dict(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"
