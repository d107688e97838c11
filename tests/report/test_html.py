"""build_report and compare_runs: self-contained HTML, markdown with PNGs, byte-equal rebuilds."""

import json
import re
import shutil

import pytest

from ensemble_distill.errors import DataError
from ensemble_distill.report import build_report, compare_runs

DATA_URI = 'src="data:image/png;base64,'


@pytest.fixture(scope="module")
def built(run_dir, tmp_path_factory):
    """A copy of the fake run with its report built once."""
    copy = tmp_path_factory.mktemp("built") / "run_a"
    shutil.copytree(run_dir, copy)
    return copy, *build_report(copy)


def test_report_files_are_written(built):
    run, html_path, md_path = built
    assert html_path == run / "report.html" and md_path == run / "report.md"
    assert sorted(p.name for p in (run / "report").iterdir()) == [
        f"{key}.png"
        for key in sorted(
            [
                "reliability",
                "mi_agreement",
                "ood_histograms",
                "diversity",
                "cost",
                "dee",
                "training",
            ]
        )
    ]


def test_html_embeds_every_figure_and_references_nothing_outside(built):
    run, html_path, _ = built
    text = html_path.read_text()
    assert text.count(DATA_URI) == len(list((run / "report").iterdir()))
    assert "http" not in text and "<link" not in text and "url(" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<strong>" in text and '<tr class="reference"><td>ensemble</td>' in text


def test_markdown_links_the_pngs_relatively(built):
    run, _, md_path = built
    text = md_path.read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == len(list((run / "report").iterdir()))
    assert all(link.startswith("report/") and (run / link).is_file() for link in links)
    assert "OOD AUROC (entropy) ↑" in text and "NLL (nats) ↓" in text


def test_report_marks_a_dee_extrapolated_below_one_member(built):
    run, html_path, md_path = built
    kd = json.loads((run / "results.json").read_text())["methods"]["kd"]
    assert kd["dee_note"] == "extrapolated" and kd["dee"] < 1  # the fixture's seed 0
    for text in (md_path.read_text(), html_path.read_text()):
        assert f"{kd['dee']:.2f}†" in text and "DEE†: worse than one member" in text


def test_rebuilding_reproduces_every_file_byte_for_byte(built):
    run, html_path, md_path = built
    paths = [html_path, md_path, *sorted((run / "report").iterdir())]
    before = {path: path.read_bytes() for path in paths}
    build_report(run)
    assert {path: path.read_bytes() for path in paths} == before


def test_report_of_a_directory_without_results_fails_cleanly(tmp_path):
    with pytest.raises(DataError, match=r"no results\.json"):
        build_report(tmp_path)


def test_compare_puts_two_runs_side_by_side(run_dir, tmp_path, make_fake_run):
    other = make_fake_run(tmp_path / "run_b", seed=1, ood=False, diversity=False)
    html_path, md_path = compare_runs([run_dir, other], tmp_path / "cmp")
    assert html_path == tmp_path / "cmp" / "compare.html"
    md = md_path.read_text()
    assert "| model | run_a (tiny, 3 members) | run_b (tiny, 3 members) |" in md
    assert "## ACC (fraction) ↑" in md and "![Quality against cost](compare/cost.png)" in md
    assert (tmp_path / "cmp" / "compare" / "cost.png").is_file()
    text = html_path.read_text()
    assert text.count(DATA_URI) == 1 and "http" not in text


def test_compare_refuses_a_directory_without_results(run_dir, tmp_path):
    with pytest.raises(DataError, match=r"no results\.json"):
        compare_runs([run_dir, tmp_path], tmp_path / "cmp")
