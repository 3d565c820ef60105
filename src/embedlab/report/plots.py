"""The report's plots, drawn with matplotlib and returned as inline SVG text (no files, no external fonts).

Each function takes plain figures (names, numbers, intervals) and returns one ``<svg>`` element ready to put in
HTML: the XML prologue and metadata are stripped, text stays text (``svg.fonttype = none``, so it is
searchable and uses the page's font), element ids are salted per plot so several plots can share a page, and
the output is deterministic (no date). Colours are stable per model across plots (:func:`colours`).

* :func:`quality_vs_throughput` — quality (with its confidence interval) against documents/s on a log scale,
  the Pareto frontier as a line, the recommended model ringed, candidates ruled out by constraints hollow;
* :func:`metric_bars` — bars of several metrics per model with confidence whiskers;
* :func:`recall_curves` — recall@k against k;
* :func:`wins_losses` — per query, how often each model beats, ties or loses to the best;
* :func:`score_distributions` — the distribution of the per-query metric for each model.

Example::

    >>> svg = recall_curves({"minilm-l6": {1: 0.5, 10: 0.8, 100: 0.95}})
    >>> svg.startswith("<svg")
    True
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from embedlab.evaluate.statistics import Interval

WIDTH_IN = 7.6
_STYLE: Any = {
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_SIZE = re.compile(r'<svg([^>]*?) width="[^"]*" height="[^"]*"')


def colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per model, stable for a given order of names (tab10, cycled)."""
    cmap = matplotlib.colormaps["tab10"]
    return {name: matplotlib.colors.to_hex(cmap(i % cmap.N)) for i, name in enumerate(names)}


def _svg(figure: Figure, *, name: str, title: str) -> str:
    """The figure as an inline ``<svg>`` element with a ``<title>`` and a stable, salted id space."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"embedlab-{name}", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = _METADATA.sub("", _PROLOGUE.sub("", buffer.getvalue(), count=1), count=1)
    text = _SIZE.sub(
        rf'<svg\1 class="plot" role="img" aria-label="{_attr(title)}" id="plot-{name}" '
        'style="max-width:100%;height:auto"',
        text,
        count=1,
    )
    return text.replace(">", f"><title>{_text(title)}</title>", 1).strip()


def _attr(text: str) -> str:
    return _text(text).replace('"', "&quot;")


def _text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _figure(height: float) -> Figure:
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    return figure


@dataclass(frozen=True)
class QualityPoint:
    """One model in the quality-versus-throughput plot."""

    name: str
    quality: float
    interval: Interval
    throughput: float
    feasible: bool = True


def quality_vs_throughput(
    points: Sequence[QualityPoint],
    *,
    metric: str,
    frontier: Sequence[str],
    recommended: str | None,
    order: Sequence[str] | None = None,
) -> str:
    """Quality ×100 (with its interval) against documents/s (log scale); Pareto frontier; recommended ringed."""
    palette = colours(order or [p.name for p in points])
    with matplotlib.rc_context(_STYLE):
        figure = _figure(4.4)
        axes = figure.add_subplot()
        ranks = {p.name: i for i, p in enumerate(sorted(points, key=lambda p: -p.quality))}
        for point in points:
            colour = palette.get(point.name, "#555555")
            x = max(point.throughput, 1e-3)
            axes.errorbar(
                [x],
                [100 * point.quality],
                yerr=[[100 * (point.quality - point.interval.low)], [100 * (point.interval.high - point.quality)]],
                fmt="o",
                color=colour,
                markerfacecolor=colour if point.feasible else "white",
                markersize=7,
                capsize=3,
                label=point.name + ("" if point.feasible else " (ruled out)"),
            )
            # Alternate label offsets by quality rank so that close points keep readable labels.
            above = ranks[point.name] % 2 == 0
            axes.annotate(
                point.name,
                (x, 100 * point.quality),
                xytext=(7, 5 if above else -11),
                textcoords="offset points",
                fontsize=8,
            )
            if point.name == recommended:
                axes.plot([x], [100 * point.quality], "o", markersize=16, markerfacecolor="none", color="#222222")
        on_frontier = sorted((p for p in points if p.name in set(frontier)), key=lambda p: p.throughput)
        if len(on_frontier) > 1:
            axes.plot(
                [max(p.throughput, 1e-3) for p in on_frontier],
                [100 * p.quality for p in on_frontier],
                "--",
                color="#888888",
                linewidth=1,
                label="Pareto frontier",
                zorder=0,
            )
        axes.set_xscale("log")
        axes.set_xlabel("documents embedded per second on this machine (log scale)")
        axes.set_ylabel(f"{metric} ×100 (95% CI)")
        axes.set_title(f"{metric} against throughput" + (f" — recommended: {recommended}" if recommended else ""))
        axes.legend(fontsize=7, loc="best", frameon=False)
    return _svg(figure, name="quality-vs-throughput", title=f"{metric} against documents per second")


def metric_bars(
    models: Sequence[str],
    metrics: Sequence[str],
    means: Mapping[str, Mapping[str, float]],
    intervals: Mapping[str, Mapping[str, Interval]],
) -> str:
    """Grouped bars: for each metric, one bar per model (×100) with its confidence whiskers."""
    palette = colours(models)
    with matplotlib.rc_context(_STYLE):
        figure = _figure(3.8)
        axes = figure.add_subplot()
        width = 0.8 / max(1, len(models))
        base = np.arange(len(metrics))
        for i, name in enumerate(models):
            values = [100 * means[name][m] for m in metrics]
            lower = [100 * (means[name][m] - intervals[name][m].low) for m in metrics]
            upper = [100 * (intervals[name][m].high - means[name][m]) for m in metrics]
            axes.bar(
                base + (i - (len(models) - 1) / 2) * width,
                values,
                width,
                yerr=[lower, upper],
                capsize=2,
                color=palette[name],
                label=name,
                error_kw={"elinewidth": 0.8},
            )
        axes.set_xticks(base, list(metrics))
        axes.set_ylabel("score ×100 (whiskers: 95% CI)")
        axes.set_ylim(0, 102)
        axes.set_title("Metrics with bootstrap confidence intervals")
        figure.legend(fontsize=7, ncols=min(6, len(models)), loc="outside lower center", frameon=False)
    return _svg(figure, name="metric-bars", title="Metric means with 95% confidence whiskers")


def recall_curves(curves: Mapping[str, Mapping[int, float]], *, order: Sequence[str] | None = None) -> str:
    """Recall@k (×100) against k (log scale), one line per model."""
    palette = colours(order or list(curves))
    with matplotlib.rc_context(_STYLE):
        figure = _figure(3.6)
        axes = figure.add_subplot()
        for name, curve in curves.items():
            ks = sorted(curve)
            axes.plot(ks, [100 * curve[k] for k in ks], "o-", markersize=3, color=palette.get(name), label=name)
        axes.set_xscale("log")
        ks_all = sorted({k for curve in curves.values() for k in curve})
        axes.set_xticks(ks_all, [str(k) for k in ks_all])
        axes.minorticks_off()
        axes.set_xlabel("k (documents retrieved)")
        axes.set_ylabel("recall@k ×100")
        axes.set_title("Recall at every cut-off")
        axes.legend(fontsize=7, loc="lower right", frameon=False)
    return _svg(figure, name="recall-curves", title="Recall at k for each model")


def wins_losses(rows: Sequence[tuple[str, int, int, int]], *, best: str, metric: str) -> str:
    """Per model (``name, wins, ties, losses`` against ``best``), stacked horizontal bars of query counts."""
    with matplotlib.rc_context(_STYLE):
        figure = _figure(0.9 + 0.32 * max(1, len(rows)))
        axes = figure.add_subplot()
        names = [r[0] for r in rows]
        wins = np.array([r[1] for r in rows])
        ties = np.array([r[2] for r in rows])
        losses = np.array([r[3] for r in rows])
        y = np.arange(len(rows))
        axes.barh(y, wins, color="#2a9d5c", label=f"better than {best}")
        axes.barh(y, ties, left=wins, color="#c8c8c8", label="same score")
        axes.barh(y, losses, left=wins + ties, color="#d0493a", label=f"worse than {best}")
        axes.set_yticks(y, names)
        axes.invert_yaxis()
        axes.set_xlabel(f"queries (by {metric})")
        axes.set_title(f"Per-query wins and losses against {best}")
        figure.legend(fontsize=7, ncols=3, loc="outside lower center", frameon=False)
        axes.grid(axis="y", visible=False)
    return _svg(figure, name="wins-losses", title=f"Per-query wins, ties and losses against {best}")


def score_distributions(per_query: Mapping[str, Sequence[float]], *, metric: str) -> str:
    """Box plots of the per-query metric (×100) for each model, with the mean marked."""
    names = list(per_query)
    palette = colours(names)
    with matplotlib.rc_context(_STYLE):
        figure = _figure(0.9 + 0.36 * max(1, len(names)))
        axes = figure.add_subplot()
        data = [100 * np.asarray(per_query[n], dtype=float) for n in names]
        boxes = axes.boxplot(
            data,
            orientation="horizontal",
            tick_labels=names,
            showmeans=True,
            patch_artist=True,
            widths=0.6,
            showfliers=False,
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black", "markersize": 4},
            medianprops={"color": "black"},
        )
        for patch, name in zip(boxes["boxes"], names, strict=True):
            patch.set_facecolor(palette[name])
            patch.set_alpha(0.35)
        # Every query as a dot (jittered vertically, fixed seed): boxes collapse when many scores are 0 or 1.
        jitter = np.random.default_rng(0)
        for row, values in enumerate(data, start=1):
            axes.plot(
                values,
                row + jitter.uniform(-0.22, 0.22, size=values.size),
                "o",
                markersize=2.5,
                alpha=0.45,
                color=palette[names[row - 1]],
                zorder=3,
            )
        axes.invert_yaxis()
        axes.set_xlim(-2, 102)
        axes.set_xlabel(f"per-query {metric} ×100 (dots: queries; box: quartiles; ◆ mean)")
        axes.set_title(f"Distribution of per-query {metric}")
        axes.grid(axis="y", visible=False)
    return _svg(figure, name="score-distributions", title=f"Distribution of per-query {metric}")
