"""build_report and compare_runs: self-contained HTML, markdown with PNGs, byte-equal rebuilds."""

import datetime
import html
import json
import re
import shutil
from importlib import metadata

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
                "risk_coverage",
                "diversity",
                "student_diversity",
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


def test_report_shows_student_diversity_with_its_caption(built):
    _, html_path, md_path = built
    caption = "a student that keeps the ensemble's disagreement lies on the teacher's line"
    md = md_path.read_text()
    assert "### Student diversity per confidence bin" in md
    assert "![Student diversity per confidence bin](report/student_diversity.png)" in md
    assert caption in md
    text = html_path.read_text()
    assert "<h3>Student diversity per confidence bin</h3>" in text
    assert html.escape(caption) in text


def _table_under(markdown: str, heading: str) -> dict[str, dict[str, str]]:
    """The markdown table after ``heading``: model -> header -> cell, bold marks removed."""
    lines = markdown.split(f"{heading}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(headers, cells, strict=True))
        for cells in (
            [c.strip().strip("*") for c in line.strip("|").split("|")] for line in lines[2:]
        )
    }


def test_report_shows_fpr95_aurc_and_the_risk_coverage_figure(built):
    run, html_path, md_path = built
    methods = json.loads((run / "results.json").read_text())["methods"]
    md, text = md_path.read_text(), html_path.read_text()
    ood = _table_under(md, "### Uncertainty and OOD detection")
    selective = _table_under(md, "### Selective prediction (test split)")
    for name, row in methods.items():
        assert ood[name]["OOD FPR@95 % TPR (entropy) ↓"] == f"{row['ood_fpr95']:.4f}"
        assert ood[name]["OOD FPR@95 % TPR (MI) ↓"] == f"{row['ood_fpr95_mi']:.4f}"
        assert selective[name]["AURC ↓"] == f"{row['aurc']:.3g}"
        assert selective[name]["E-AURC ↓"] == f"{row['eaurc']:.3g}"
    assert ood["kd"]["OOD FPR@95 % TPR (MI) ↓"] == "1.0000"  # one network: MI 0 everywhere
    assert "<th>OOD FPR@95 % TPR (MI) ↓</th>" in text and "<th>E-AURC ↓</th>" in text
    assert "![Selective prediction: risk against coverage](report/risk_coverage.png)" in md
    assert "<h3>Selective prediction: risk against coverage</h3>" in text
    assert "FPR@95 % TPR: the fraction of test inputs flagged as OOD" in md


def test_a_run_from_before_student_diversity_still_reports(tmp_path, make_fake_run):
    run = make_fake_run(tmp_path / "old", test_diversity=False)
    _, md_path = build_report(run)
    assert not (run / "report" / "student_diversity.png").exists()
    assert "Student diversity" not in md_path.read_text()
    assert (run / "report" / "diversity.png").is_file()  # the teachers' figure is unaffected


def test_an_edited_student_diversity_is_refused_naming_results_json(tmp_path, make_fake_run):
    run = make_fake_run(tmp_path / "edited")
    results = json.loads((run / "results.json").read_text())
    results["test_diversity"]["hydra"]["edges"] = "0,1"
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match=r"results\.json: 'test_diversity' is missing or not"):
        build_report(run)
    assert not (run / "report.html").exists()


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


def test_report_names_the_run_log_dates_and_the_package_version(run_dir, tmp_path):
    run = tmp_path / "run_a"
    shutil.copytree(run_dir, run)
    log = (
        b"2024-03-01 23:59:58,100 INFO ensemble_distill.pipeline: teacher into /r\xff\n"
        b"a record's continuation line, undated\n"
        b"2024-03-02 00:00:03,200 INFO ensemble_distill.pipeline: evaluating ...\n"
    )
    (run / "run.log").write_bytes(log)  # not UTF-8: a path logged with surrogateescape
    html_path, md_path = build_report(run)
    version = metadata.version("ensemble-distill")
    line = (
        f"Run made 2024-03-01 to 2024-03-02 (dates from run.log); "
        f"report by ensemble-distill {version}."
    )
    assert line in md_path.read_text().splitlines()
    assert f"<p>{html.escape(line)}</p>" in html_path.read_text()


def test_a_run_without_run_log_shows_the_build_date_and_says_so(built):
    _, html_path, md_path = built
    days = [datetime.date.today() - datetime.timedelta(days=d) for d in (0, 1)]  # midnight
    version = metadata.version("ensemble-distill")
    for text in (md_path.read_text(), html_path.read_text()):
        assert "Run date not recorded (no dated run.log)" in text
        assert any(f"report built {day.isoformat()}, " in text for day in days)
        assert f"report by ensemble-distill {version}." in text


def test_compare_names_the_package_version(run_dir, tmp_path):
    html_path, md_path = compare_runs([run_dir], tmp_path / "cmp")
    version = metadata.version("ensemble-distill")
    assert f"Report by ensemble-distill {version}." in md_path.read_text()
    assert f"Report by ensemble-distill {version}." in html_path.read_text()


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


def test_a_converted_ood_set_is_named_in_the_summary(built, run_dir, tmp_path):
    """results.json's ood_set.converted (data/ood.py) reaches the report's summary line; a
    run without the field (older, or an unconverted set) reads as before."""
    plain = built[2].read_text()
    assert "OOD set: noise;" in plain and "converted" not in plain
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    results = json.loads((copy / "results.json").read_text())
    results["ood_set"] = {"name": "mnist", "converted": "grey 28x28 upsampled to 3x32x32"}
    (copy / "results.json").write_text(json.dumps(results))
    converted = build_report(copy)[1].read_text()
    assert "OOD set: noise (**converted: grey 28x28 upsampled to 3x32x32**);" in converted
