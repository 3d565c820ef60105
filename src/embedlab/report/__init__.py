"""Reports people can read: one self-contained HTML page, a Markdown twin, and the JSON they are rendered from.

* :mod:`embedlab.report.document` — the report as data (:class:`Report`, :class:`Section`), ``report.json``,
  and :func:`add_section`, which any command uses to add its section to a report in an ``--out`` folder;
* :mod:`embedlab.report.html` — the page (inline style and SVG, no scripts, nothing loaded from outside) and
  helpers to build HTML fragments safely;
* :mod:`embedlab.report.markdown` — the Markdown version;
* :mod:`embedlab.report.plots` — matplotlib plots as inline SVG;
* :mod:`embedlab.report.selection` — the sections ``embedlab select`` writes.

Example (a command adding its section to the report ``embedlab select`` wrote)::

    >>> from embedlab.report import add_section
    >>> add_section("runs/scifact", "finetune", {"ndcg@10": {"before": 0.645, "after": 0.69}},
    ...             "nDCG@10: 64.5 → 69.0", "<p>nDCG@10: 64.5 → 69.0</p>", title="Fine-tuning")
"""

from __future__ import annotations

from embedlab.report.document import (
    REPORT_SCHEMA_VERSION,
    Report,
    Section,
    add_section,
    load_report,
    render_report,
    write_report,
)

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "Report",
    "Section",
    "add_section",
    "load_report",
    "render_report",
    "write_report",
]
