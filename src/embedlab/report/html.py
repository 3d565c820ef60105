"""The report as one self-contained HTML page, and the helpers that build its fragments.

:func:`render_html` turns a :class:`~embedlab.report.document.Report` into a single file that opens anywhere,
offline: the style sheet is inline, the plots are inline SVG (:mod:`embedlab.report.plots`), there are no
scripts, and a Content-Security-Policy forbids loading anything from outside (a browser would refuse it and
log an error, which the report's test looks for). Each section becomes ``<section id="NAME">`` with its title
as a heading, listed in the table of contents at the top.

Fragment helpers, for any section (``embedlab finetune`` adds its own): :func:`escape`, :func:`paragraph`,
:func:`bullets`, :func:`table` (figures right-aligned, optional per-row CSS classes, scrolls sideways when
wide), :func:`figure` (an SVG with a caption), :func:`code_block`.

Example::

    >>> table(["model", "ndcg@10"], [["minilm-l6", "64.51"]], caption="Leaderboard")
    '<div class="scroll"><table><caption>Leaderboard</caption><thead><tr><th>model</th><th class="num">ndcg@10</th>...'
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from embedlab.report.document import Report

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

STYLE = """
:root { color-scheme: light; --ink: #1d232a; --muted: #5b6570; --rule: #d9dee3; --accent: #1f6feb;
        --good: #1a7f4b; --bad: #b42318; --tie: #8a6d00; --bg-soft: #f5f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 64px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p.subtitle { margin: 0; color: var(--muted); }
nav.toc { margin: 16px 0 8px; padding: 10px 14px; background: var(--bg-soft); border-radius: 8px; }
nav.toc a { margin-right: 16px; color: var(--accent); text-decoration: none; white-space: nowrap; }
section { margin-top: 34px; }
h2 { font-size: 20px; border-bottom: 1px solid var(--rule); padding-bottom: 4px; }
h3 { font-size: 16px; margin-bottom: 6px; }
p.headline { font-size: 19px; font-weight: 600; margin: 8px 0; }
ul.reasons li { margin: 3px 0; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 13px; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding-bottom: 6px; }
td:first-child { white-space: nowrap; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { background: var(--bg-soft); font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
div.scroll { overflow-x: auto; max-width: 100%; }
tr.best td { background: #eaf6ee; }
tr.tied td { background: #fdf7e3; }
tr.recommended td:first-child { font-weight: 700; }
tr.ruled-out td { color: var(--muted); }
.verdict-best { color: var(--good); font-weight: 600; }
.verdict-tied { color: var(--tie); font-weight: 600; }
.verdict-below { color: var(--bad); }
figure { margin: 18px 0 26px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
svg.plot { display: block; }
pre { background: #0f1720; color: #e6edf3; padding: 10px 14px; border-radius: 6px; overflow-x: auto; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
.note { color: var(--muted); font-size: 13px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""


def escape(text: object) -> str:
    """Text made safe to put inside HTML."""
    return html.escape(str(text), quote=True)


def paragraph(text: str, *, css: str | None = None) -> str:
    attr = f' class="{escape(css)}"' if css else ""
    return f"<p{attr}>{escape(text)}</p>"


def bullets(items: Sequence[str], *, css: str | None = None) -> str:
    attr = f' class="{escape(css)}"' if css else ""
    return f"<ul{attr}>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>"


def code_block(text: str) -> str:
    return f"<pre><code>{escape(text)}</code></pre>"


def _is_figure(cell: str) -> bool:
    """A number, a range of numbers (``64.4–73.0``, ``-1.2 to +3.4``), a figure with a unit, or a dash."""
    cleaned = cell.replace(",", "").replace("−", "-").replace("★", "").strip()
    if cleaned in {"", "-"}:
        return True
    parts = [p.strip() for p in cleaned.replace(" to ", "–").split("–")]
    try:
        for part in parts:
            float(part.split()[0].rstrip("%×x"))
    except (ValueError, IndexError):
        return False
    return True


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    caption: str | None = None,
    row_classes: Sequence[str] | None = None,
    cell_classes: Sequence[Sequence[str]] | None = None,
) -> str:
    """An HTML table; columns whose cells are all figures are right-aligned. Every cell is escaped."""
    numeric = [bool(rows) and all(_is_figure(str(r[i])) for r in rows) for i in range(len(headers))]
    head = "".join(
        f'<th class="num">{escape(h)}</th>' if numeric[i] else f"<th>{escape(h)}</th>" for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        css = f' class="{escape(row_classes[r])}"' if row_classes and row_classes[r] else ""
        cells = []
        for i, cell in enumerate(row):
            classes = ["num"] if numeric[i] else []
            if cell_classes and cell_classes[r][i]:
                classes.append(cell_classes[r][i])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{escape(cell)}</td>")
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def figure(svg: str, caption: str) -> str:
    """An inline SVG (from :mod:`embedlab.report.plots`) with its caption."""
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def render_html(report: Report) -> str:
    """The whole page: head (inline style, CSP), title, table of contents, sections, footer."""
    toc = "".join(f'<a href="#{escape(s.name)}">{escape(s.title)}</a>' for s in report.sections)
    sections = "\n".join(
        f'<section id="{escape(s.name)}"><h2>{escape(s.title)}</h2>\n{s.html}\n</section>' for s in report.sections
    )
    manifest = report.manifest
    version = manifest.get("packages", {}).get("embedlab", "")
    created = manifest.get("created", "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{escape(report.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<header><h1>{escape(report.title)}</h1><p class="subtitle">{escape(report.subtitle)}</p></header>
<nav class="toc">{toc}</nav>
{sections}
<footer>Made by embedlab {escape(version)} on {escape(created)}. Every figure, the per-query scores and the
manifest (package versions, hardware, data hash, seeds, wall times) are in report.json beside this file.</footer>
</main>
</body>
</html>
"""
