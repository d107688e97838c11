"""The ``report`` and ``compare`` subcommands."""

import shutil

import pytest

from ensemble_distill.cli import main


def test_report_command_writes_html_and_markdown(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["report", str(copy)]) == 0
    assert capsys.readouterr().out.split() == [str(copy / "report.html"), str(copy / "report.md")]


def test_compare_command_writes_the_comparison(run_dir, tmp_path, make_fake_run):
    other = make_fake_run(tmp_path / "run_b", seed=1)
    assert main(["compare", str(run_dir), str(other), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.html").is_file()
    assert (tmp_path / "cmp" / "compare.md").is_file()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_directory_without_results_exits_2_with_one_line(tmp_path, capsys, command):
    argv = ["report", str(tmp_path)]
    if command == "compare":
        argv = ["compare", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "cmp")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ensemble-distill: error:") and "no results.json" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "cmp").exists()


def test_report_refuses_overrides(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path), "epochs=3"])
    assert exit_info.value.code == 2
