"""The report as Markdown: the same sections as the HTML page, for reading in a terminal, a pull request or a
repository. Plots are not inlined; a section may link the SVG files it wrote beside the report.

Example::

    >>> print(render_markdown(Report("embedlab select — scifact", "5,183 documents", {}, (section,))))
    # embedlab select — scifact
    <BLANKLINE>
    5,183 documents
    ...
"""

from __future__ import annotations

from embedlab.report.document import Report


def render_markdown(report: Report) -> str:
    """Title, subtitle, a contents line, then each section as ``## title`` followed by its Markdown."""
    lines = [f"# {report.title}", ""]
    if report.subtitle:
        lines += [report.subtitle, ""]
    if len(report.sections) > 1:
        lines += ["Contents: " + " · ".join(f"[{s.title}](#{s.name})" for s in report.sections), ""]
    for section in report.sections:
        lines += [f'<a id="{section.name}"></a>', "", f"## {section.title}", "", section.markdown.strip(), ""]
    version = report.manifest.get("packages", {}).get("embedlab", "")
    lines += [
        "---",
        f"Made by embedlab {version} on {report.manifest.get('created', '')}; every figure and the manifest are "
        "in `report.json`.",
        "",
    ]
    return "\n".join(lines)
