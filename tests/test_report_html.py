"""The HTML report in a real browser (Debian's headless Chromium): tables and plots render, the console is quiet,
nothing is loaded from outside; and other commands can add their section to the same report.

Chromium is installed by the test set-up (``make test`` runs ``make browser``). Without it the browser tests
skip locally, but fail in CI (``CI`` set), where the report must be checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from embedlab.errors import EmbedlabError
from embedlab.report import add_section, load_report, render_report
from embedlab.report.html import table

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONSOLE = re.compile(r":CONSOLE(?:\(\d+\))?[:\]].*")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must check the report (fix: make browser)")
        pytest.skip("chromium is not installed (make browser installs it)")
    return found


def open_in_chromium(chromium: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The page's DOM after loading, and every console message Chromium logged while loading it."""
    done = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [m.group(0) for m in CONSOLE.finditer(done.stderr)]


def test_console_check_catches_errors(chromium: str, tmp_path: Path) -> None:
    """The detector itself: a page with a script error and a blocked external image is caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' content=\"img-src data:\">"
        "</head><body><img src='http://example.invalid/x.png'><script>undefinedFunction()</script></body></html>"
    )
    _, messages = open_in_chromium(chromium, page, tmp_path / "profile")
    assert any("Uncaught ReferenceError" in m for m in messages)
    assert any("Content Security Policy" in m for m in messages)


def test_report_renders_with_tables_plots_and_a_quiet_console(chromium: str, small_selection, tmp_path: Path) -> None:
    selection, out = small_selection
    source = (out / "report.html").read_text()
    # Self-contained: no scripts, no stylesheets or images fetched from anywhere.
    assert "<script" not in source and "<link" not in source
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", source)
    dom, messages = open_in_chromium(chromium, out / "report.html", tmp_path / "profile")
    assert messages == []
    assert dom.count("<svg") >= 5
    assert dom.count("<table") >= 6
    for plot in ("quality-vs-throughput", "metric-bars", "recall-curves", "wins-losses", "score-distributions"):
        svg = re.search(rf'<svg[^>]*id="plot-{plot}".*?</svg>', dom, re.S)
        assert svg is not None, plot
        assert svg.group(0).count("<path") > 5  # something was drawn
    for section in ("recommendation", "leaderboard", "plots", "cost", "constraints", "metrics", "reproducibility"):
        assert f'<section id="{section}">' in dom
    assert selection.recommendation.headline in dom
    for name in selection.statistics.names():
        assert f"<td>{name}" in dom


def test_another_command_adds_its_section_and_select_keeps_it(small_selection, tmp_path: Path) -> None:
    selection, source = small_selection
    out = tmp_path / "report"
    shutil.copytree(source, out)
    paths = add_section(
        out,
        "finetune",
        {"before": {"ndcg@10": 0.6}, "after": {"ndcg@10": 0.7}},
        "nDCG@10: 60.0 → 70.0",
        table(["model", "ndcg@10"], [["before", "60.00"], ["after", "70.00"]]),
        title="Fine-tuning: before and after",
    )
    report = load_report(out)
    assert report is not None and report.sections[-1].name == "finetune"
    html = paths["html"].read_text()
    assert '<section id="finetune"><h2>Fine-tuning: before and after</h2>' in html
    assert "## Fine-tuning: before and after" in paths["markdown"].read_text()
    # Adding it again replaces it in place; re-running select keeps it.
    add_section(out, "finetune", {"n": 1}, "again", "<p>again</p>", title="Fine-tuning")
    assert [s.name for s in load_report(out).sections].count("finetune") == 1
    selection.write(out)
    names = [s.name for s in load_report(out).sections]
    assert names[0] == "recommendation" and names[-1] == "finetune"
    assert "<p>again</p>" in render_report(out)["html"].read_text()
    payload = json.loads((out / "report.json").read_text())
    assert payload["sections"][-1]["payload"] == {"n": 1}


def test_add_section_starts_a_report_in_an_empty_folder(tmp_path: Path) -> None:
    paths = add_section(tmp_path, "finetune", {"x": 1}, "text", "<p>text</p>")
    payload = json.loads(paths["json"].read_text())
    assert payload["schema_version"] == 1 and payload["manifest"]["packages"]
    assert [s["name"] for s in payload["sections"]] == ["finetune"]
    with pytest.raises(EmbedlabError, match="section name"):
        add_section(tmp_path, "bad name!", {}, "", "")
