"""`ensemble-distill sweep`: parsing the swept values, the grid and its folder names, one
teacher per teacher setting, the table that chooses on validation, resuming, refusals, and
benchmarks/choose_eta.py as an instance of it."""

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from ensemble_distill.cli import main
from ensemble_distill.errors import ConfigError
from ensemble_distill.sweep import (
    CHOSEN,
    MAX_NAME,
    TEST_LABEL,
    Point,
    grid,
    parse_arguments,
    split_values,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import choose_eta

TINY = ["members=2", "epochs=1", "model_args={widths: [16]}", "eval.latency_repeats=2"]
POINTS = ("kd.temperature=1", "kd.temperature=2")


# --- parsing and the grid --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("0.004,0.016", ["0.004", "0.016"]),
        ("[kd,hydra]", ["[kd,hydra]"]),
        ("[],[100,100]", ["[]", "[100,100]"]),
        ("[kd],[kd,hydra]", ["[kd]", "[kd,hydra]"]),
        ("{widths: [16, 16]},{widths: [8]}", ["{widths: [16, 16]}", "{widths: [8]}"]),
        ('"a,b",c', ['"a,b"', "c"]),
        ("'a,b'", ["'a,b'"]),
        ("'it''s,x'", ["'it''s,x'"]),
        ('"a\\",b"', ['"a\\",b"']),
        ("plain", ["plain"]),
    ],
)
def test_split_values_splits_at_top_level_commas_only(text, values):
    assert split_values(text) == values


def test_parse_arguments_separates_swept_keys_from_fixed_ones():
    swept, fixed = parse_arguments(
        ["methods=[kd,hydra]", "perturbation.eta=0.004, 0.016", "hydra.head_widths=[],[8]"]
    )
    assert swept == {"perturbation.eta": ["0.004", "0.016"], "hydra.head_widths": ["[]", "[8]"]}
    assert fixed == ["methods=[kd,hydra]"]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["members=2"], "no swept key"),
        (["kd.temperature=1,,2"], "has an empty value"),
        (["kd.temperature=1,"], "has an empty value"),
        (["kd.temperature=1,2,1"], "repeats a value"),
        (["kd.temperature=3", "kd.temperature=1,2"], "kd.temperature is swept and given again"),
    ],
)
def test_parse_arguments_refuses(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_arguments(items)


def test_grid_is_the_product_first_key_slowest_with_readable_names():
    points = grid({"perturbation.eta": ["0.004", "0.016"], "hydra.head_widths": ["[]", "[8]"]})
    assert [p.name for p in points] == [
        "perturbation.eta=0.004__hydra.head_widths=[]",
        "perturbation.eta=0.004__hydra.head_widths=[8]",
        "perturbation.eta=0.016__hydra.head_widths=[]",
        "perturbation.eta=0.016__hydra.head_widths=[8]",
    ]
    assert points[1].overrides == ["perturbation.eta=0.004", "hydra.head_widths=[8]"]


def test_names_stay_distinct_where_characters_are_replaced_or_the_name_is_cut():
    odd = [Point((("data_dir", value),)) for value in ("a b", "a_b", "a/b", "a:b")]
    names = [p.name for p in odd]
    assert len(set(names)) == 4 and "data_dir=a_b" in names  # the clean one keeps its name
    assert all("/" not in n and " " not in n and ":" not in n for n in names)
    long = [Point((("data_dir", "x" * 200 + tail),)) for tail in "ab"]
    assert all(len(p.name) <= MAX_NAME for p in long)
    assert long[0].name != long[1].name


# --- a tiny sweep through the CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished two-point sweep over the KD temperature (the teacher's settings agree)."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    args = ["sweep", "--out", str(out), *TINY, "methods=[kd]", "kd.temperature=1,2", "--quiet"]
    assert main(args) == 0
    return out, args


def final_val_nll(student: Path) -> float:
    with (student / "history.csv").open() as handle:
        return float(list(csv.DictReader(handle))[-1]["val_nll"])


def test_the_teacher_is_trained_once_and_kept_by_every_other_point(swept):
    out, _ = swept
    manifests = [json.loads((out / p / "teacher/manifest.json").read_text()) for p in POINTS]
    assert manifests[0]["weights_sha256"] == manifests[1]["weights_sha256"]
    logs = [(out / p / "run.log").read_text() for p in POINTS]
    assert "teacher: 2 members trained" in logs[0]
    assert "teacher: already trained with these settings, kept" in logs[1]
    assert "members trained" not in logs[1]


def test_sweep_table_marks_the_validation_choice_and_labels_test_columns(swept):
    out, _ = swept
    lines = (out / "sweep.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith("| kd.temperature=")]
    assert len(rows) == 2 and sum(CHOSEN in row for row in rows) == 1
    header = next(line for line in lines if line.startswith("| point |"))
    assert "| kd.temperature | student |" in header and f"{TEST_LABEL}: NLL" in header
    record = json.loads((out / "sweep.json").read_text())
    by_val = {p: final_val_nll(out / p / "students/kd") for p in POINTS}
    assert record["chosen"] == {"kd": min(by_val, key=by_val.get)}
    for row in record["rows"]:
        assert row["val"]["nll"] == pytest.approx(by_val[row["point"]])
        results = json.loads((out / row["point"] / "results.json").read_text())
        assert row["test"]["nll"] == results["methods"]["kd"]["nll"]
    assert (out / "compare.html").is_file() and (out / "compare.md").is_file()
    assert all(p in (out / "compare.md").read_text() for p in POINTS)


def test_rerunning_the_sweep_keeps_every_finished_point(swept, capsys):
    out, args = swept
    before = {p: (out / p / "run.log").read_text() for p in POINTS}
    assert main(args) == 0
    assert {p: (out / p / "run.log").read_text() for p in POINTS} == before  # no run at all
    assert f"kd: {min(POINTS, key=lambda p: final_val_nll(out / p / 'students/kd'))}" in (
        capsys.readouterr().out
    )


def test_a_point_folder_trained_with_other_settings_is_refused_before_any_training(swept, capsys):
    out, _ = swept
    files = sorted(str(p) for p in out.rglob("*"))
    args = ["sweep", "--out", str(out), *TINY, "members=3", "kd.temperature=1,2,4", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kd.temperature=1" in err and "members" in err
    assert sorted(str(p) for p in out.rglob("*")) == files  # not even point 3's folder


def test_a_teacher_with_other_settings_is_refused(swept, tmp_path, capsys):
    out, _ = swept
    teacher = out / POINTS[0] / "teacher"
    args = ["sweep", "--out", str(tmp_path / "t"), "--teacher", str(teacher), *TINY]
    assert main([*args, "members=3", "kd.temperature=1,2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--teacher" in err and "changed: members" in err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    ("swept_arg", "message"),
    [
        ("kd.temperature=1,-2", "sweep point kd.temperature=-2: config key 'kd.temperature'"),
        ("kd.temprature=1,2", "did you mean 'kd.temperature'"),
        ("members=2,0", "sweep point members=0: config key 'members' must be >= 1"),
        ("model_args={widths: [-1]},{widths: [4]}", "fix model_args"),
        ("kd.temperature=1,1.0", "give the same config"),
        ("kd.temperature=2", "no swept key"),
        ("dataset=digits,toy-gap", "mix classification and regression"),
    ],
)
def test_bad_sweeps_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, swept_arg, message):
    out = tmp_path / "s"
    assert main(["sweep", "--out", str(out), "epochs=1", "methods=[kd]", swept_arg]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("ensemble-distill: error:")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow  # long end to end: `make test-all` only
def test_teacher_sweeps_train_one_teacher_each_and_share_untouched_students(tmp_path):
    out = tmp_path / "s"
    hydra = ["sweep", "--out", str(out), *TINY, "methods=[kd,hydra]", "hydra.head_widths=[],[8]"]
    assert main([*hydra, "--quiet"]) == 0
    points = ("hydra.head_widths=[]", "hydra.head_widths=[8]")
    sha = [json.loads((out / p / "students/kd/manifest.json").read_text()) for p in points]
    assert sha[0]["weights_sha256"] == sha[1]["weights_sha256"]  # kd did not depend on it
    assert "student kd: already trained with these settings, kept" in (
        (out / points[1] / "run.log").read_text()
    )
    members = ["sweep", "--out", str(tmp_path / "m"), *TINY[1:]]
    assert main([*members, "methods=[kd]", "members=2,3", "--quiet"]) == 0
    logs = [(tmp_path / "m" / f"members={m}" / "run.log").read_text() for m in (2, 3)]
    assert "teacher: 2 members trained" in logs[0] and "teacher: 3 members trained" in logs[1]


# --- benchmarks/choose_eta.py: a sweep over perturbation.eta ---------------------------------


@pytest.mark.slow  # long end to end: `make test-all` only
def test_choose_eta_distils_from_the_runs_teacher_and_chooses_on_validation(
    swept, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    shutil.copytree(swept[0] / POINTS[0], run)
    doc = tmp_path / "eta"
    argv = ["choose_eta.py", "--run", str(run), "--data-dir", str(tmp_path)]
    argv += ["--methods", "kd+ods", "--etas", "1", "4", "--doc", str(doc)]
    monkeypatch.setattr(sys, "argv", argv)
    choose_eta.main()
    record = json.loads(doc.with_suffix(".json").read_text())
    nll = {
        k: final_val_nll(run / "eta_sweep" / f"perturbation.eta={int(k) / 255!r}/students/kd+ods")
        for k in ("1", "4")
    }
    assert {k: v["val_nll"] for k, v in record["table"]["kd+ods"].items()} == pytest.approx(nll)
    assert record["chosen"] == {"kd+ods": min(nll, key=nll.get)}
    assert "| kd+ods |" in doc.with_suffix(".md").read_text()
    teacher = json.loads((run / "teacher/manifest.json").read_text())["weights_sha256"]
    for point in (run / "eta_sweep").glob("perturbation.eta=*"):
        assert json.loads((point / "teacher/manifest.json").read_text())["weights_sha256"] == (
            teacher
        )
        assert "members trained" not in (point / "run.log").read_text()
