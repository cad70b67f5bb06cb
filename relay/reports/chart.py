"""The report chart: cost per day (per hour for a daily report) stacked by model or team, with the previous
period's cost per day as a line and its total in the legend. A PNG of exactly ``width`` × ``height`` pixels.

Rendered with matplotlib's object API on the Agg backend (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``):
no pyplot global state, so it is safe in a worker thread and never opens a window
(https://matplotlib.org/stable/gallery/user_interfaces/canvasagg.html). The daemon imports this module only in a
child process (``relay.reports.deliver.render_chart_apart``); ``relay report`` renders in its own process.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from relay.reports.model import Report

__all__ = ["render_chart", "CHART_WIDTH", "CHART_HEIGHT"]

#: Default PNG size in pixels.
CHART_WIDTH, CHART_HEIGHT = 1200, 600
_DPI = 100
#: Colour-blind-safe palette (Okabe–Ito), then grey for "others".
_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
_OTHERS = "#999999"


def render_chart(r: Report, width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> bytes | None:
    """The PNG bytes of ``r``'s chart, or None when the report has no chart data (an empty period)."""
    s = r.series
    if s is None or r.empty:
        return None
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = list(range(len(s.buckets)))
    bottom = [0.0] * len(x)
    for i, (key, values) in enumerate(s.stacks.items()):
        usd = [v / 1e9 for v in values]
        colour = _OTHERS if key == "others" else _COLOURS[i % len(_COLOURS)]
        ax.bar(x, usd, bottom=bottom, label=key, color=colour, width=0.8, edgecolor="white", linewidth=0.5)
        bottom = [b + u for b, u in zip(bottom, usd, strict=False)]
    if s.previous is not None:
        prev = [v / 1e9 for v in s.previous[: len(x)]]
        ax.plot(
            x[: len(prev)],
            prev,
            color="#333333",
            linestyle="--",
            marker="o",
            markersize=4,
            label=f"previous {r.noun} (total ${sum(s.previous) / 1e9:,.2f})",
        )
    ax.set_xticks(x)
    ax.set_xticklabels(s.buckets, fontsize=8 if len(x) > 14 else 10)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"${v:,.0f}" if v >= 10 else f"${v:,.2f}"))
    ax.set_ylabel("cost (USD)")
    ax.set_xlabel("hour" if r.kind == "daily" else "day")
    total = sum(s.totals) / 1e9
    ax.set_title(f"{r.title}\ntotal ${total:,.2f}, stacked by {s.by}", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if s.stacks or s.previous is not None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)  # no bbox_inches="tight": the size must stay width × height
    return buf.getvalue()
