"""The sections that ``embedlab select`` puts in the report, built from a :class:`~embedlab.select.Selection`.

:func:`selection_sections` returns, in order: ``recommendation`` (the decision, its reasons, fine-tuning advice
and command), ``leaderboard`` (means with 95% intervals, tests against the best, the main costs), ``plots``
(quality against throughput with the Pareto frontier, metric bars with whiskers, recall@k curves, per-query
wins and losses against the best, per-query score distributions), ``cost`` (every measured cost, index bytes
per precision and Matryoshka dimension, the whole-corpus estimate, the conditions of the measurement),
``constraints`` (what each candidate breaks, the frontier), ``metrics`` (every metric with its interval) and
``reproducibility`` (data hash, configuration, seeds, wall times, versions, hardware). A model that trained on
the evaluated queries or their relevant documents is marked ``†`` in the leaderboard, with a footnote saying
what it saw (and the recommendation says its score is not a fair comparison). Each section holds HTML,
Markdown and its figures; :func:`write_selection_report` writes them with
:func:`~embedlab.report.document.write_report`, keeping sections other commands added before.

Example::

    >>> paths = write_selection_report(selection, Path("runs/select"))
    >>> paths["html"]
    PosixPath('runs/select/report.html')
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.cost import format_duration
from embedlab.data.dataset import load_notes
from embedlab.files import markdown_table, write_text_atomic
from embedlab.report import html as h
from embedlab.report import plots
from embedlab.report.document import Report, Section, load_report, write_report

if TYPE_CHECKING:
    from embedlab.select import Selection

SELECT_SECTIONS = ("recommendation", "leaderboard", "plots", "cost", "constraints", "metrics", "reproducibility")


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _headline_metrics(selection: Selection) -> list[str]:
    ks = selection.config.k_values
    wanted = [selection.metric, f"recall@{ks[-1]}", f"mrr@{min(10, ks[-1])}", f"map@{ks[-1]}"]
    return [m for m in dict.fromkeys(wanted) if m in selection.comparison.metrics]


def build_plots(selection: Selection) -> dict[str, tuple[str, str]]:
    """Every plot as ``name -> (svg, caption)``."""
    stats = selection.statistics
    rec = selection.recommendation
    order = stats.names()
    metric = selection.metric
    points = [
        plots.QualityPoint(
            name=m.name,
            quality=m.means[metric],
            interval=m.intervals[metric],
            throughput=selection.costs[m.name].documents_per_second,
            feasible=m.name not in rec.violations or not rec.violations[m.name],
        )
        for m in stats.models
    ]
    headline = _headline_metrics(selection)
    wins = [
        (m.name, m.versus_best.wins, m.versus_best.ties, m.versus_best.losses)
        for m in stats.models
        if m.versus_best is not None
    ]
    out = {
        "quality-vs-throughput": (
            plots.quality_vs_throughput(
                points, metric=metric, frontier=rec.frontier, recommended=rec.model, order=order
            ),
            f"{metric} (95% CI) against documents embedded per second on this machine. The dashed line is the "
            "Pareto frontier: no other candidate is both better and faster. Ringed: recommended; hollow: ruled "
            "out by your constraints.",
        ),
        "metric-bars": (
            plots.metric_bars(
                order,
                headline,
                {m.name: m.means for m in stats.models},
                {m.name: m.intervals for m in stats.models},
            ),
            "Mean of each headline metric with its 95% bootstrap confidence interval (whiskers).",
        ),
        "recall-curves": (
            plots.recall_curves({n: selection.recall_curves[n] for n in order}, order=order),
            "Recall at every cut-off k: how many of the relevant documents are in the top k.",
        ),
        "score-distributions": (
            plots.score_distributions({n: list(stats.per_query[n].values()) for n in order}, metric=metric),
            f"Per-query {metric}: a mean hides whether a model fails a few queries badly or many a little.",
        ),
    }
    if wins:
        out["wins-losses"] = (
            plots.wins_losses(wins, best=stats.best, metric=metric),
            f"For each query, whether the model scores above, equal to or below {stats.best} on {metric}.",
        )
    return out


def _recommendation_section(selection: Selection) -> Section:
    rec = selection.recommendation
    advice = rec.finetune
    constraints = rec.constraints.describe()
    parts = [h.paragraph(rec.headline, css="headline"), h.bullets(list(rec.reasons), css="reasons")]
    parts.append(h.paragraph(f"Constraints: {constraints}.", css="note"))
    verdict = advice.verdict + (" to pay off" if advice.verdict in ("likely", "unlikely") else "")
    parts.append(f"<h3>Fine-tuning: {h.escape(verdict)}</h3>")
    parts.append(h.bullets(list(advice.reasons)))
    if advice.command:
        parts.append(h.paragraph("Run this to fine-tune; it adds a before/after section to this report:"))
        parts.append(h.code_block(advice.command))
    markdown = [f"**{rec.headline}**", "", *(f"- {r}" for r in rec.reasons), "", f"Constraints: {constraints}.", ""]
    markdown += [f"### Fine-tuning: {verdict}", "", *(f"- {r}" for r in advice.reasons), ""]
    if advice.command:
        markdown += ["```bash", advice.command, "```", ""]
    if rec.deploy:
        parts.append("<h3>Deploy it</h3>")
        parts.append(
            h.paragraph("Index the recommended system and serve it (POST /search, the OpenAI embeddings API):")
        )
        parts.append(h.code_block("\n".join(rec.deploy)))
        markdown += ["### Deploy it", "", "```bash", *rec.deploy, "```", ""]
    return Section("recommendation", "Recommendation", "\n".join(markdown), "\n".join(parts), payload=rec.to_dict())


def _leaderboard_section(selection: Selection) -> Section:
    stats = selection.statistics
    rec = selection.recommendation
    metric = selection.metric
    recall = f"recall@{selection.config.k_values[-1]}"
    headers = [
        "model",
        metric,
        "95% CI",
        "Δ best",
        "95% CI of Δ",
        "p (Holm)",
        "verdict",
        "wins/ties/losses",
        recall,
        "docs/s",
        "p95 ms",
        "disk MB",
    ]
    rows, row_classes, cell_classes = [], [], []
    for model in stats.models:
        cost = selection.costs[model.name]
        test = model.versus_best
        interval = model.intervals[metric]
        verdict = model.verdict
        rows.append(
            [
                selection.result(model.name).marked_name + (" ★" if model.name == rec.model else ""),
                _pct(model.means[metric]),
                f"{_pct(interval.low)}–{_pct(interval.high)}",
                f"{100 * test.difference:+.2f}" if test else "-",
                f"{100 * test.difference_interval.low:+.2f} to {100 * test.difference_interval.high:+.2f}"
                if test
                else "-",
                f"{test.p_adjusted:.4f}" if test else "-",
                verdict,
                f"{test.wins}/{test.ties}/{test.losses}" if test else "-",
                _pct(model.means[recall]) if recall in model.means else "-",
                f"{cost.documents_per_second:.1f}",
                f"{cost.latency.p95:.1f}",
                f"{cost.size_mb:.0f}" if cost.size_bytes else "-",
            ]
        )
        classes = ["best" if verdict == "best" else "tied" if verdict == "tied" else "below"]
        if model.name == rec.model:
            classes.append("recommended")
        if rec.violations.get(model.name):
            classes.append("ruled-out")
        row_classes.append(" ".join(classes))
        cells = [""] * len(headers)
        cells[6] = {"best": "verdict-best", "tied": "verdict-tied"}.get(verdict, "verdict-below")
        cell_classes.append(cells)
    note = (
        f"Scores ×100 over {stats.num_queries} queries. 95% CIs: percentile bootstrap over queries, "
        f"{stats.resamples:,} resamples, seed {stats.seed}. Each model is tested against {stats.best} with a "
        f"paired {stats.method} test on {metric}; p-values are Holm-corrected over the {len(stats.models) - 1} "
        f"comparisons; tied = p ≥ {stats.alpha}. ★ = recommended. Costs measured on this machine (see Cost)."
    )
    footnotes = selection.overlap_footnotes()
    html = h.table(headers, rows, row_classes=row_classes, cell_classes=cell_classes)
    html += "".join(h.paragraph(line, css="note trained-on-evaluation") for line in footnotes)
    html += h.paragraph(note, css="note")
    markdown = markdown_table(headers, rows) + "\n\n" + "".join(f"{line}\n\n" for line in footnotes) + note
    payload = stats.to_dict() | {
        "training_overlap": {
            r.name: r.training_overlap.to_dict() for r in selection.comparison.results if r.training_overlap
        }
    }
    return Section("leaderboard", "Leaderboard", markdown, html, payload=payload)


def _plots_section(figures: dict[str, tuple[str, str]]) -> Section:
    html = "\n".join(h.figure(svg, caption) for svg, caption in figures.values())
    markdown = "\n\n".join(f"![{caption}](plots/{name}.svg)" for name, (_, caption) in figures.items())
    return Section("plots", "Plots", markdown, html, payload={"files": [f"plots/{n}.svg" for n in figures]})


def _cost_section(selection: Selection) -> Section:
    costs = selection.costs
    headers, rows = costs.rows()
    corpus_headers = ["model", "time for the corpus", "memory", "float32 vectors MB", "load s", "basis"]
    corpus_rows = [
        [
            c.name,
            format_duration(c.corpus.seconds),
            f"{c.corpus.memory_bytes / 1e6:.0f} MB",
            f"{c.corpus.vector_bytes / 1e6:.1f}",
            f"{c.load_seconds:.1f}",
            c.corpus.basis,
        ]
        for c in costs.costs
    ]
    index_headers = ["model", "format", "dim", "bytes/doc", "whole corpus MB"]
    index_rows = [
        [
            c.name,
            entry.format,
            str(entry.dim) if entry.dim else "-",
            f"{entry.bytes_per_document:.0f}",
            f"{entry.bytes_per_document * c.corpus.documents / 1e6:.1f}",
        ]
        for c in costs.costs
        for entry in c.index
    ]
    memory_headers = ["model", "runtime MB", "model MB", "peak MB", "method", "threads", "load avg (1 min)"]
    memory_rows = [
        [
            c.name,
            f"{c.memory.runtime_bytes / 1e6:.0f}",
            f"{c.memory.model_bytes / 1e6:.0f}",
            f"{c.memory.peak_bytes / 1e6:.0f}",
            c.memory.method,
            str(c.conditions.get("threads", "-")),
            _load(c.conditions),
        ]
        for c in costs.costs
    ]
    sample = next((c.conditions for c in costs.costs if "sample_documents" in c.conditions), {})
    note = (
        f"Measured on this machine on a random sample of your data (seed {selection.config.seed}): "
        f"{sample.get('sample_documents', '?')} documents encoded in batches of {selection.config.batch_size}, "
        f"{sample.get('sample_queries', '?')} queries one at a time for latency (encoding only; BM25: search "
        "included). Each model ran in a fresh process; memory is the resident set size (kernel high-water mark) "
        "above the process before the model's runtime was imported, so it counts runtime, weights and "
        "activations. The hybrid's figures are its parts' added up. Corpus estimates extrapolate the measured "
        "throughput; a busy machine (high load average) gives lower throughput."
    )
    html = "\n".join(
        [
            h.table(headers, rows, caption="Throughput, latency, memory and size"),
            h.table(corpus_headers, corpus_rows, caption="Embedding the whole corpus (estimate)"),
            h.table(index_headers, index_rows, caption="Index size per document (vectors only)"),
            h.table(memory_headers, memory_rows, caption="Memory and measurement conditions"),
            h.paragraph(note, css="note"),
        ]
    )
    markdown = "\n\n".join(
        [
            markdown_table(headers, rows),
            "**Embedding the whole corpus (estimate)**\n\n" + markdown_table(corpus_headers, corpus_rows),
            "**Index size per document (vectors only)**\n\n" + markdown_table(index_headers, index_rows),
            "**Memory and measurement conditions**\n\n" + markdown_table(memory_headers, memory_rows),
            note,
        ]
    )
    return Section("cost", "Cost on this machine", markdown, html, payload=costs.to_dict())


def _load(conditions: dict[str, Any] | Any) -> str:
    before = conditions.get("load_average_1m_before")
    after = conditions.get("load_average_1m")
    if before is None and after is None:
        return "-"
    return f"{before:.1f} → {after:.1f}" if before is not None and after is not None else f"{before or after:.1f}"


def _constraints_section(selection: Selection) -> Section:
    rec = selection.recommendation
    headers = ["model", "fits", "breaks", "on the Pareto frontier"]
    rows = [
        [
            name,
            "no" if rec.violations.get(name) else "yes",
            "; ".join(f"{v.option}: {v.message}" for v in rec.violations.get(name, ())) or "-",
            "yes" if name in rec.frontier else "no",
        ]
        for name in selection.statistics.names()
    ]
    intro = f"Your constraints: {rec.constraints.describe()}. Pareto frontier (fastest first): " + ", ".join(
        rec.frontier
    )
    html = h.paragraph(intro) + h.table(headers, rows)
    markdown = intro + "\n\n" + markdown_table(headers, rows)
    return Section(
        "constraints", "Constraints and Pareto frontier", markdown, html, payload=rec.to_dict()["violations"]
    )


def _metrics_section(selection: Selection) -> Section:
    stats = selection.statistics
    metrics = selection.comparison.metrics
    headers = ["metric", *(selection.result(name).marked_name for name in stats.names())]
    rows = [
        [
            metric,
            *(
                f"{_pct(m.means[metric])} [{_pct(m.intervals[metric].low)}, {_pct(m.intervals[metric].high)}]"
                for m in stats.models
            ),
        ]
        for metric in metrics
    ]
    note = "Every metric ×100 (trec_eval definitions) with its 95% bootstrap interval in brackets; models best first."
    return Section(
        "metrics",
        "Every metric",
        markdown_table(headers, rows) + "\n\n" + note,
        h.table(headers, rows) + h.paragraph(note, css="note"),
        payload={m.name: {x: m.intervals[x].to_dict() | {"mean": m.means[x]} for x in metrics} for m in stats.models},
    )


def _reproducibility_section(selection: Selection, manifest: dict[str, Any]) -> Section:
    data = selection.dataset
    walls = manifest.get("wall_seconds", {})
    hardware = manifest.get("hardware", {})
    rows = [
        ["data", f"{data['name']} ({data.get('source') or 'built in'}), split {data.get('split') or '-'}"],
        ["data hash", data["content_hash"]],
        ["documents / queries", f"{data['documents']} / {data['queries']}"],
        *(["loaded", note] for note in load_notes(data.get("load_report", {}))),
        ["seeds", ", ".join(f"{k} {v}" for k, v in manifest.get("seeds", {}).items())],
        ["wall time", ", ".join(f"{k} {v:.1f} s" for k, v in walls.items())],
        [
            "hardware",
            f"{hardware.get('cpu', '?')}, {hardware.get('threads', '?')} threads, "
            f"{hardware.get('memory_gb', '?')} GB, flags {' '.join(hardware.get('cpu_flags', []))}",
        ],
        ["python", str(manifest.get("python", ""))],
        ["packages", ", ".join(f"{k} {v}" for k, v in manifest.get("packages", {}).items())],
        ["created", str(manifest.get("created", ""))],
    ]
    config = selection.config.to_dict()
    config["constraints"] = selection.config.constraints.describe()
    config_rows = [[k, ", ".join(map(str, v)) if isinstance(v, list) else str(v)] for k, v in config.items()]
    html = h.table(["", ""], rows) + h.table(["setting", "value"], config_rows, caption="Configuration")
    markdown = markdown_table(["", ""], rows) + "\n\n" + markdown_table(["setting", "value"], config_rows)
    return Section("reproducibility", "Reproducibility", markdown, html, payload={"manifest": manifest})


def selection_sections(
    selection: Selection, figures: dict[str, tuple[str, str]], manifest: dict[str, Any]
) -> list[Section]:
    """The select report's sections, in order (see the module docstring)."""
    return [
        _recommendation_section(selection),
        _leaderboard_section(selection),
        _plots_section(figures),
        _cost_section(selection),
        _constraints_section(selection),
        _metrics_section(selection),
        _reproducibility_section(selection, manifest),
    ]


def write_selection_report(selection: Selection, out: Path) -> dict[str, Path]:
    """Plots as SVG files, then the report (JSON, HTML, Markdown), keeping other commands' sections."""
    start = time.perf_counter()
    figures = build_plots(selection)
    for name, (svg, _) in figures.items():
        write_text_atomic(out / "plots" / f"{name}.svg", svg + "\n")
    manifest = dict(selection.manifest)
    walls = dict(manifest.get("wall_seconds", {}))
    walls["report"] = time.perf_counter() - start
    manifest["wall_seconds"] = walls
    data = selection.dataset
    report = Report(
        title=f"embedlab select — {data['name']}",
        subtitle=(
            f"{data['documents']:,} documents, {data['queries']:,} judged queries"
            f"{' (' + data['split'] + ')' if data.get('split') else ''}; {len(selection.statistics.models)} "
            f"candidates; ranked by {selection.metric}; data hash {data['content_hash'][:12]}"
        ),
        manifest=manifest,
    )
    previous = load_report(out)
    if previous is not None:
        # Keep what other commands added (their sections after ours), replace ours.
        report = replace(report, sections=tuple(s for s in previous.sections if s.name not in SELECT_SECTIONS))
    sections = selection_sections(selection, figures, manifest)
    ordered = Report(report.title, report.subtitle, report.manifest, tuple(sections) + report.sections)
    return write_report(out, ordered)
