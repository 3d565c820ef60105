"""The report as data: a title, a manifest and an ordered list of sections, kept in ``report.json``.

A :class:`Section` carries everything needed to show it — its rendered Markdown, its HTML fragment — and the
figures behind it (``payload``). ``report.html`` (one self-contained page, see :mod:`embedlab.report.html`)
and ``report.md`` (:mod:`embedlab.report.markdown`) are always rendered *from* ``report.json``, so any command
can add its own section to a report another command wrote, without knowing how the other sections were made:

    >>> from embedlab.report import add_section
    >>> add_section(
    ...     "runs/scifact",                       # the --out folder of `embedlab select`
    ...     "finetune",                           # section name; adding it again replaces it in place
    ...     {"before": {"ndcg@10": 0.645}, "after": {"ndcg@10": 0.690}},   # JSON-ready figures
    ...     "nDCG@10 went from 64.5 to 69.0.",    # Markdown (no heading: the title is added)
    ...     "<p>nDCG@10 went from 64.5 to 69.0.</p>",                     # an HTML fragment
    ...     title="Fine-tuning: before and after",
    ... )

That rewrites ``report.json`` (atomically) and re-renders ``report.html`` and ``report.md``. When the folder has
no report yet, a new one is started with that single section. HTML fragments are inserted as given: build
them with the helpers of :mod:`embedlab.report.html` (``table``, ``figure``, ``paragraph``, ``escape``) so text
is escaped; the page has no scripts and loads nothing from outside, so fragments must not either.

The JSON carries ``schema_version`` (:data:`REPORT_SCHEMA_VERSION`) and the manifest of the command that
created the report (package versions, hardware, data hash, seeds, wall times); a section's own manifest, if
it has one, belongs in its payload.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from embedlab.errors import EmbedlabError
from embedlab.files import write_json_atomic, write_text_atomic

REPORT_SCHEMA_VERSION = 1
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"


@dataclass(frozen=True)
class Section:
    """One part of the report: ``name`` is its id (``[a-z0-9-]``), ``title`` its heading."""

    name: str
    title: str
    markdown: str
    html: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not all(ch.isalnum() or ch in "-_" for ch in self.name):
            raise EmbedlabError(f"a report section name takes letters, digits, '-' and '_' (got {self.name!r})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "markdown": self.markdown,
            "html": self.html,
            "payload": dict(self.payload),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Section:
        return cls(
            name=data["name"],
            title=data.get("title", data["name"]),
            markdown=data.get("markdown", ""),
            html=data.get("html", ""),
            payload=dict(data.get("payload", {})),
        )


@dataclass(frozen=True)
class Report:
    """A title, a subtitle line, the creating command's manifest, and the sections in order."""

    title: str
    subtitle: str
    manifest: Mapping[str, Any]
    sections: tuple[Section, ...] = ()

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def with_section(self, section: Section, *, after: str | None = None) -> Report:
        """A new report with ``section`` replacing the one of the same name in place, or inserted after
        ``after`` (or at the end)."""
        sections = list(self.sections)
        for i, existing in enumerate(sections):
            if existing.name == section.name:
                sections[i] = section
                return replace(self, sections=tuple(sections))
        position = len(sections)
        if after is not None:
            names = [s.name for s in sections]
            if after in names:
                position = names.index(after) + 1
        sections.insert(position, section)
        return replace(self, sections=tuple(sections))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "kind": "report",
            "title": self.title,
            "subtitle": self.subtitle,
            "manifest": dict(self.manifest),
            "sections": [s.to_dict() for s in self.sections],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        version = data.get("schema_version")
        if version != REPORT_SCHEMA_VERSION:
            raise EmbedlabError(
                f"report schema version {version} is not the one this embedlab reads ({REPORT_SCHEMA_VERSION}); "
                "re-run the command that wrote it"
            )
        return cls(
            title=data.get("title", "embedlab report"),
            subtitle=data.get("subtitle", ""),
            manifest=dict(data.get("manifest", {})),
            sections=tuple(Section.from_dict(s) for s in data.get("sections", [])),
        )


def load_report(out_dir: str | Path) -> Report | None:
    """The report kept in ``out_dir/report.json``, or ``None`` when there is none."""
    path = Path(out_dir) / REPORT_JSON
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EmbedlabError(f"{path}: not a readable report ({exc}); remove it or choose another --out") from exc
    return Report.from_dict(data)


def write_report(out_dir: str | Path, report: Report) -> dict[str, Path]:
    """Write ``report.json`` and render ``report.html`` and ``report.md`` from it; returns the three paths."""
    from embedlab.report.html import render_html
    from embedlab.report.markdown import render_markdown

    out = Path(out_dir)
    return {
        "json": write_json_atomic(out / REPORT_JSON, report.to_dict()),
        "html": write_text_atomic(out / REPORT_HTML, render_html(report)),
        "markdown": write_text_atomic(out / REPORT_MD, render_markdown(report)),
    }


def render_report(out_dir: str | Path) -> dict[str, Path]:
    """Re-render ``report.html`` and ``report.md`` from ``report.json`` (after editing it by hand, say)."""
    report = load_report(out_dir)
    if report is None:
        raise EmbedlabError(f"{Path(out_dir) / REPORT_JSON}: no report here to render")
    return write_report(out_dir, report)


def add_section(
    out_dir: str | Path,
    section_name: str,
    payload: Mapping[str, Any],
    markdown: str,
    html_fragment: str,
    *,
    title: str | None = None,
    after: str | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Add (or replace) one section of the report in ``out_dir`` and re-render it; see the module docstring.

    ``manifest`` is only used when the folder has no report yet (it becomes the new report's manifest).
    Returns the paths of ``report.json``, ``report.html`` and ``report.md``.
    """
    json.dumps(payload, allow_nan=False)  # fail here, not half-way through writing
    report = load_report(out_dir)
    if report is None:
        from embedlab.manifest import build_manifest

        report = Report(
            title="embedlab report",
            subtitle="",
            manifest=dict(manifest) if manifest is not None else build_manifest(command=section_name),
        )
    section = Section(
        name=section_name,
        title=title or section_name.replace("-", " ").replace("_", " ").capitalize(),
        markdown=markdown,
        html=html_fragment,
        payload=payload,
    )
    return write_report(out_dir, report.with_section(section, after=after))
