"""benchmarks/disagreement.py on digits with four students: the rows it derives from the saved
outputs, the disagreement temperature's rows, and the choice on validation data only."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from ensemble_distill import metrics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import disagreement as study  # noqa: E402
import seeds  # noqa: E402

pytestmark = pytest.mark.slow
NAMES = ("kd", "hydra default", "hydra joint + mixture + adapters + MI", "be")


def quick(tmp: Path) -> study.Study:
    students = {name: study.STUDENTS[name] for name in NAMES}
    return dataclasses.replace(
        study.MNIST, base=study.MNIST.base + study.QUICK, students=students, runs=tmp, out=tmp
    )


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disagreement")
    study.run_seed(quick(tmp), None, 0, inputs=study.inputs)
    return study.score_seed(quick(tmp), None, 0), tmp


def test_every_student_is_scored_with_and_without_its_disagreement_temperature(scored):
    rows = scored[0]["rows"]
    members = {"hydra default", "hydra joint + mixture + adapters + MI", "be"}
    assert set(rows) == {"ensemble", "member", *NAMES, *(n + study.SCALED for n in members)}
    assert rows["ensemble"]["ood_mi_ratio"] == pytest.approx(1.0)
    assert rows["kd"]["params_x"] == 1.0 and rows["kd"]["ood_mi_ratio"] == 0.0
    assert rows["be"]["flops_x"] == pytest.approx(3.0, rel=0.05)  # M = 3 members per input
    assert rows["hydra default"]["scale"] is None and rows["be + s"]["scale"] > 0


def test_the_scale_matches_the_ensembles_mean_validation_mi(scored):
    """Oracle: the MI metric on the rescaled saved outputs, against the ensemble's."""
    _, tmp = scored
    ensemble, _, _ = study.read_outputs(tmp / "seed0" / "ensemble.safetensors")
    student, _, _ = study.read_outputs(tmp / "seed0" / "hydra default.safetensors")
    target = metrics.mutual_information(torch.softmax(ensemble["val"].double(), -1)).mean()
    scale = study.fit_disagreement_scale(student["val"], float(target))
    scaled = study.scale_disagreement(student["val"].double(), scale)
    got = metrics.mutual_information(torch.softmax(scaled, -1)).mean()
    assert float(got) == pytest.approx(float(target), rel=1e-6)


def test_the_perturbed_validation_copies_are_fixed_per_seed_and_stay_in_range():
    x = torch.rand(6, 1, 8, 8)
    a, b = study.perturbed_validation(x, 0), study.perturbed_validation(x, 0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.min() >= 0 and v.max() <= 1 for v in a.values())
    assert not torch.equal(a["val_noise"], study.perturbed_validation(x, 1)["val_noise"])


def test_the_choice_reads_validation_scores_only_and_names_ties():
    def row(val_cnll, rho, flops=1.1, params=1.1, cnll=0.05, std=0.01, de2=0.106):
        return {
            "val_cnll": (val_cnll, std),
            "val_shift_rho": (rho, std),
            "flops_x": (flops, 0.0),
            "params_x": (params, 0.0),
            "cnll": (cnll, 0.0),
            "val_de2": (de2, 0.0),  # the validation cNLL bound, over the row's seeds
        }

    rows = {
        "ensemble": row(0.01, 1.0, flops=10, params=10),
        "member": row(0.06, None),
        "a": row(0.100, 0.80),
        "b": row(0.105, 0.85),  # within the bound, more faithful than a: chosen
        "c": row(0.099, 0.99, flops=2.5),  # best everywhere, but not compact
        "d": row(0.300, 0.99, cnll=0.001),  # best test cNLL, beyond the validation bound
    }
    assert study.choose(rows) == ("b", [], True)
    rows["e"] = row(0.102, 0.845)  # ρ within b's std: a tie, broken by validation cNLL
    assert study.choose(rows) == ("e", ["b"], True)
    # Each row against DE-2 over its own seeds: e's seeds' teachers bound it lower.
    rows["e"] = row(0.102, 0.845, de2=0.09)
    assert study.choose(rows) == ("b", [], True)
    # None within the bound: the most faithful compact student, the bound named as missed.
    low = {name: r | {"val_de2": (0.05, 0.0)} for name, r in rows.items()}
    assert study.choose(low) == ("d", [], False)
    # No compact student with an MI yet (``--only kd be``): no choice, and the page says so.
    summary = {"chosen": None, "tie": [], "within_bound": False}
    assert study.choose({k: rows[k] for k in ("ensemble", "member", "c")}) == (None, [], False)
    assert study.choice_text(summary).startswith("none yet")
    assert study.chosen_floor_lines(summary, 0.85) == []


def test_the_page_is_written_with_its_floors(scored):
    record, tmp = scored
    summary = study.tabulate(quick(tmp), {0: record})
    page = study.markdown(
        quick(tmp), {"command": "c", "machine_line": "m", "summary": summary, "per_seed": {}}
    )
    assert "**(chosen)**" in page and "## Floors" in page and "OOD MI ratio" in page


@pytest.mark.parametrize("name", sorted(study.STUDIES))
def test_every_student_of_every_study_is_a_valid_config(name):
    """A typo in a study's overrides fails here, not an hour into the study."""
    chosen = study.STUDIES[name]
    assert chosen.title in study.RHO_FLOOR
    for student, (method, overrides) in chosen.students.items():
        config = chosen.config_for(None, 0, method, overrides)
        budget = 6 if student.endswith(", 6x") else 4  # the patient budget, or its top
        assert config.methods == [method] and config.student.epochs_multiple == budget


def mi_numpy(logits: torch.Tensor):
    """Independent MI: entropy of the mean minus the mean entropy, in numpy float64."""
    import numpy as np

    p = torch.softmax(logits.double(), -1).numpy()  # (batch, members, classes)
    mean = p.mean(1)
    return -(mean * np.log(mean)).sum(-1) + (p * np.log(p)).sum(-1).mean(1)


def test_ensemble_agreement_is_the_rank_correlation_between_seeds_teachers(tmp_path):
    import scipy.stats
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    outputs = {}
    for seed in (0, 1, 2):
        outputs[seed] = {s: torch.randn(50, 3, 4, generator=generator) for s in ("test", "ood")}
        path = tmp_path / f"seed{seed}" / "ensemble.safetensors"
        path.parent.mkdir()
        save_file(outputs[seed], path, metadata={"kind": "logits", "info": "{}"})
    agreement = study.ensemble_agreement(dataclasses.replace(study.MNIST, out=tmp_path), [0, 1, 2])
    pairs = [(0, 1), (0, 2), (1, 2)]
    rhos = [
        scipy.stats.spearmanr(mi_numpy(outputs[a]["ood"]), mi_numpy(outputs[b]["ood"])).statistic
        for a, b in pairs
    ]
    assert agreement["pairs"] == 3
    assert agreement["ood_rho"][0] == pytest.approx(sum(rhos) / 3, abs=1e-6)
    ratios = [
        min(mi_numpy(outputs[a]["ood"]).mean(), mi_numpy(outputs[b]["ood"]).mean())
        / max(mi_numpy(outputs[a]["ood"]).mean(), mi_numpy(outputs[b]["ood"]).mean())
        for a, b in pairs
    ]
    assert agreement["ood_mi_ratio"][0] == pytest.approx(sum(ratios) / 3, rel=1e-5)
    assert study.ensemble_agreement(dataclasses.replace(study.MNIST, out=tmp_path), [0]) is None


def dm_rows(confods: dict, be: dict, gaussian: dict, seeds=(0, 1, 2)) -> dict:
    def row(values):
        return {**{k: (v, 0.01) for k, v in values.items()}, "seeds": list(seeds)}

    return {"be + confods": row(confods), "be": row(be), "be + gaussian": row(gaussian)}


BASE = {"cnll": 0.30, "ood_mi_ratio": 0.5, "mi_spearman_ood": 0.5}


@pytest.mark.parametrize(
    ("confods", "verdict"),
    [
        ({"cnll": 0.25, "ood_mi_ratio": 0.8, "mi_spearman_ood": 0.6}, "reproduced"),
        ({"cnll": 0.305, "ood_mi_ratio": 0.505, "mi_spearman_ood": 0.495}, "not reproduced"),
        ({"cnll": 0.25, "ood_mi_ratio": 0.5, "mi_spearman_ood": 0.5}, "partly"),
        # an MI ratio further from 1 on the other side is no win: 2.5 is worse than 0.5
        ({"cnll": 0.35, "ood_mi_ratio": 2.5, "mi_spearman_ood": 0.4}, "not reproduced"),
    ],
)
def test_the_diversity_matters_verdict_needs_wins_beyond_the_std(confods, verdict):
    result = study.dm_verdict(dm_rows(confods, BASE, BASE), [0, 1, 2])
    assert result["verdict"] == verdict
    assert result["gaps"]["cnll vs be"]["gap"] == pytest.approx(confods["cnll"] - 0.30)


def test_a_worse_value_beyond_the_std_is_marked_a_loss():
    confods = {"cnll": 0.35, "ood_mi_ratio": 0.8, "mi_spearman_ood": 0.505}
    gaps = study.dm_verdict(dm_rows(confods, BASE, BASE), [0, 1, 2])["gaps"]
    assert gaps["cnll vs be"]["loss"] and not gaps["cnll vs be"]["win"]
    assert gaps["ood_mi_ratio vs be"]["win"] and not gaps["ood_mi_ratio vs be"]["loss"]
    assert not gaps["mi_spearman_ood vs be"]["win"] and not gaps["mi_spearman_ood vs be"]["loss"]
    means = {"be + confods": dict.fromkeys(study.DM_KEYS, (0.35, 0.01))}
    lines = study.dm_lines({"gaps": gaps, "verdict": "partly", "seeds": [0, 1, 2], "means": means})
    assert "| `be + confods` | 0.3500 ± 0.0100 | 0.35 ± 0.01 | 0.350 ± 0.010 |" in "\n".join(lines)
    assert "| cNLL | +0.0500 (0.0100) **loss** |" in "\n".join(lines)


def test_no_verdict_until_the_three_students_have_three_seeds():
    rows = dm_rows(BASE, BASE, BASE)
    rows["be + gaussian"]["seeds"] = [0, 1]
    assert study.dm_verdict(rows, [0, 1, 2]) is None
    assert study.dm_lines(None) == []


def test_extra_seeds_for_a_few_rows_leave_the_others_comparable():
    """Seeds 3 and 4 trained for the verdict's students only (a claim resting on a gap smaller
    than the std): the verdict reads their 5 seeds, and the rows of 3 seeds stay in."""
    confods = {"cnll": 0.25, "ood_mi_ratio": 0.8, "mi_spearman_ood": 0.6}
    rows = dm_rows(confods, BASE, BASE, seeds=(0, 1, 2, 3, 4))
    assert study.dm_verdict(rows, [0, 1, 2, 3, 4])["verdict"] == "reproduced"
    rows["be"]["seeds"] = [0, 1, 2]
    assert study.dm_verdict(rows, [0, 1, 2, 3, 4]) is not None
    rows["be"]["seeds"] = [3, 4]  # a row on its first seeds only
    assert study.dm_verdict(rows, [0, 1, 2, 3, 4]) is None
    assert seeds.comparable({"seeds": [0]}, [0])  # a one-seed page: every seed it has


def test_the_command_names_the_students_trained_on_the_extra_seeds():
    """Rerunning the page's command gives the same page: seeds 3 and 4 only for the students
    that have them (quoted for the shell), not every student on 5 seeds."""
    import shlex

    rows = {
        "ensemble": {"seeds": [0, 1, 2, 3, 4]},
        "kd": {"seeds": [0, 1, 2, 3, 4]},
        "hydra joint + mixture": {"seeds": [0, 1, 2, 3, 4]},
        "be": {"seeds": [0, 1, 2]},
    }
    students = ["kd", "be", "hydra joint + mixture"]
    command = seeds.study_command("python d.py", [0, 1, 2, 3, 4], rows, students)
    first, then = command.split(" && ")
    assert first == "python d.py --seeds 0 1 2"
    assert shlex.split(then)[-4:] == ["4", "--only", "kd", "hydra joint + mixture"]
    assert seeds.study_command("python d.py", [0, 1, 2], rows, students) == first


@pytest.mark.parametrize(
    ("name", "epochs", "teacher_passes"),
    [
        ("kd", 32, 1),  # 4 x 8 epochs; the clean inputs' outputs once
        ("hydra joint + mixture + MI, 6x", 48, 3),  # 3 pooled copies
        ("hydra joint + ods", 32, 3 + 3 * 3 / 10),  # + one member's backward per copy
    ],
)
def test_training_flops_count_the_student_epochs_and_the_teachers_passes(
    name, epochs, teacher_passes
):
    flops, teacher = 1000, 10_000  # per example: the student's and the 10 members' forward
    got = study.training_flops(study.MNIST, None, 0, name, flops, teacher)
    assert got == pytest.approx(3 * flops * epochs + teacher_passes * teacher)


def test_latentbe_trains_its_members_on_live_diverse_inputs():
    """LatentBE folds M = 10 BatchEnsemble members into one network after training: its 32
    epochs train all 10 (3 passes each), and every epoch perturbs live, which costs the
    teacher's outputs (1 pass) and the diverse step: the student's forward and backward (3
    passes), teacher member i's forward and backward and member j's forward (4 passes of one
    member, a tenth of the teacher's)."""
    flops, teacher = 1000, 10_000
    got = study.training_flops(study.MNIST, None, 0, "latentbe", flops, teacher)
    trained, member = 10 * flops, teacher / 10
    assert got == pytest.approx(32 * (3 * trained + teacher + 4 * member + 3 * trained))


@pytest.mark.parametrize(
    ("miss", "std", "start"),
    [(-0.01, 0.02, "- met"), (0.003, 0.02, "- **not met, a tie**"), (0.05, 0.02, "- **not met**:")],
)
def test_a_floor_missed_by_less_than_the_seeds_std_is_called_a_tie(miss, std, start):
    assert study.floor_line("ρ 0.847 >= 0.85", miss, std).startswith(start)


def test_the_floors_measure_each_miss_against_its_floor():
    def row(**values):
        base = {"params_x": (1.3, 0.0), "flops_x": (1.3, 0.0)}
        return base | {k: (v, 0.01) for k, v in values.items()}

    student = row(ood_mi_ratio=0.4, mi_spearman_ood=0.84, ood_auroc_mi=0.96, cnll=0.049)
    student |= {"ensemble_auroc_mi": (0.95, 0.01), "de2": (0.0486, 0.0)}
    misses = [miss for _, miss, _ in study.floors(student, 0.85)]
    assert misses == pytest.approx([0.0, 0.1, 0.01, -0.02, 0.0004])


def test_the_floor_table_reads_every_compact_student_with_an_mi():
    def row(seeds=(0, 1, 2), flops=1.3, **values):
        base = {"params_x": (1.3, 0.0), "flops_x": (flops, 0.0), "seeds": list(seeds)}
        base |= {"ensemble_auroc_mi": (0.95, 0.0), "de2": (0.0486, 0.0)}
        return base | {k: (v, 0.01) for k, v in values.items()}

    fidelity = {"ood_mi_ratio": 0.6, "ood_auroc_mi": 0.96, "cnll": 0.0490}
    rows = {
        "ensemble": row(flops=10, ood_auroc_mi=0.95, mi_spearman_ood=1.0),
        "bottom": row(mi_spearman_ood=0.70, **fidelity | {"ood_mi_ratio": 0.1}),
        "top": row(mi_spearman_ood=0.845, **fidelity),  # ρ and cNLL short by less than 0.01
        "wide": row(flops=10, mi_spearman_ood=0.9, **fidelity),  # not compact
        "new": row(seeds=(3,), mi_spearman_ood=0.9, **fidelity),  # on its first seed
        "kd": row(mi_spearman_ood=None, **fidelity) | {"mi_spearman_ood": None},  # no MI
    }
    summary = {"rows": rows, "curve": [(0.05, 0.0), (0.0486, 0.0)], "seeds": [0, 1, 2, 3]}
    table = [line for line in study.floor_table(summary, 0.85) if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| top", "| bottom"]  # most met first
    assert table[1].endswith(
        "| 0, 1, 2 | 0.600 met | 0.845 tie | 0.9600 (0.9400) met | 0.0490 (0.0486) tie | "
        "2 + 2 tie of 4 |"
    )
    assert table[2].endswith(
        "0.100 missed | 0.700 missed | 0.9600 (0.9400) met | 0.0490 (0.0486) tie | 1 + 1 tie of 4 |"
    )


def summary_of(chosen: str, tie: list[str], params: dict[str, float]) -> dict:
    rows = {name: {"params_x": (value, 0.0)} for name, value in params.items()}
    return {"chosen": chosen, "tie": tie, "rows": rows}


PARAMS = {"hydra joint + mixture": 1.08, "hydra joint + mixture + adapters": 1.34, "endd": 1.0}


@pytest.mark.parametrize(
    ("mnist", "fashion", "default"),
    [
        # the same choice on both data sets
        (
            ("hydra joint + mixture + adapters", []),
            ("hydra joint + mixture + adapters", []),
            "hydra joint + mixture + adapters",
        ),
        # different choices that tie with each other on both: the cheaper
        (
            ("hydra joint + mixture + adapters", ["hydra joint + mixture"]),
            ("hydra joint + mixture", ["hydra joint + mixture + adapters"]),
            "hydra joint + mixture",
        ),
        # different choices, tied on one data set only: no single default
        (("hydra joint + mixture + adapters", []), ("hydra joint + mixture", []), None),
        # a choice that is no Hydra (EnD²) sets no Hydra default on its own
        (
            ("endd", ["hydra joint + mixture"]),
            ("hydra joint + mixture", []),
            "hydra joint + mixture",
        ),
    ],
)
def test_the_default_hydra_reads_both_choices_and_breaks_a_tie_by_cost(mnist, fashion, default):
    summaries = {"m": summary_of(*mnist, PARAMS), "f": summary_of(*fashion, PARAMS)}
    assert study.default_hydra(summaries)["default"] == default


def test_the_page_keeps_every_trained_seed_when_one_seed_is_rerun(tmp_path):
    """``--seeds 1 --only NAME`` trains seed 1's missing rows; the page still covers seeds 0
    and 2, whose ensembles are on disk (a seed folder without one is not a trained seed)."""
    for seed in (0, 2):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "ensemble.safetensors").touch()
    (tmp_path / "seed3" / "teacher").mkdir(parents=True)
    (tmp_path / "seedling").mkdir()
    assert seeds.page_seeds(tmp_path, [1]) == [0, 1, 2]
    assert seeds.page_seeds(tmp_path / "none", [2, 0]) == [0, 2]
    assert seeds.page_seeds(tmp_path, [1], marker="teacher") == [1, 3]  # the CIFAR-10 study's


def scores(teacher_cnll: float, **students: float) -> dict:
    """One seed's scores as :func:`study.score_seed` gives them, the teacher named by its
    cNLL and each student by its own."""
    ensemble = {"acc": 0.9, "cnll": teacher_cnll, "ood_auroc": 0.9}
    rows = {"ensemble": ensemble, "member": {"cnll": 0.3}}
    rows |= {name: {"cnll": cnll} for name, cnll in students.items()}
    return {"rows": rows, "curve": [teacher_cnll], "diversity": dict.fromkeys(students, 1.0)}


def test_a_seed_rescored_with_its_teacher_replaces_the_recorded_rows_and_keeps_the_rest():
    merged = seeds.merge_seed(scores(0.2, be=0.25, kd=0.3), scores(0.2, be=0.24, latentbe=0.22))
    assert {k: v["cnll"] for k, v in merged["rows"].items() if k != "member"} == {
        "ensemble": 0.2,
        "be": 0.24,
        "kd": 0.3,
        "latentbe": 0.22,
    }
    assert merged["diversity"] == {"be": 1.0, "kd": 1.0, "latentbe": 1.0}
    assert seeds.merge_seed(None, scores(0.2)) == scores(0.2)


def test_a_student_of_another_teacher_never_joins_the_seeds_recorded_rows(tmp_path):
    doc = tmp_path / "page"
    doc.with_suffix(".json").write_text(
        __import__("json").dumps({"per_seed": {"2": scores(0.2, be=0.25)}})
    )
    (tmp_path / "seed2").mkdir()
    (tmp_path / "seed2" / "ensemble.safetensors").touch()
    with pytest.raises(SystemExit, match=r"seed 2: the teacher under .*seed2 is not the one"):
        seeds.page_scores(doc, tmp_path, [], lambda seed: scores(0.21, latentbe=0.22))
    with pytest.raises(ValueError, match="another teacher"):
        seeds.merge_seed(scores(0.2, be=0.25), scores(0.21, latentbe=0.22))


def test_the_page_keeps_recorded_seeds_whose_folders_are_gone(tmp_path):
    """``runs/`` is not kept: a page rewritten after it is lost keeps every recorded seed,
    rescoring only the seeds trained since, and refuses a seed that is nowhere."""
    doc = tmp_path / "page"
    record = {"per_seed": {"0": scores(0.2, be=0.25), "1": scores(0.2, be=0.26)}}
    record["summary"] = {"seeds": [0, 1], "ensemble_agreement": {"pairs": 1, "ood_rho": [0.5, 0]}}
    doc.with_suffix(".json").write_text(__import__("json").dumps(record))
    (tmp_path / "seed3").mkdir()
    (tmp_path / "seed3" / "ensemble.safetensors").touch()
    per_seed = seeds.page_scores(doc, tmp_path, [3], lambda seed: scores(0.19, be=0.2 + seed))
    assert sorted(per_seed) == [0, 1, 3] and per_seed[3]["rows"]["be"]["cnll"] == 3.2
    assert per_seed[0] == record["per_seed"]["0"]
    agreement = study.page_agreement(dataclasses.replace(quick(tmp_path), doc=doc), [0, 1, 3])
    assert agreement == {"seeds": [0, 1], "pairs": 1, "ood_rho": [0.5, 0]}  # as recorded
    with pytest.raises(SystemExit, match=r"seeds \[4\]"):
        seeds.page_scores(doc, tmp_path, [4], lambda seed: scores(0.2))


def test_references_and_the_verdict_read_the_seeds_the_rows_share():
    """A row of seeds 0-2 beside an ensemble of seeds 0-3 is held against DE-2 and the
    ensemble over seeds 0-2; ConfODS on seeds 0-2 is compared with BE's seeds 0-2 only."""
    per_seed = {
        s: {
            "curve": [0.3, 0.20 + 0.01 * s],
            "val_curve": [0.3, 0.10 + 0.01 * s],
            "rows": {"ensemble": {"ood_auroc_mi": 0.90 + 0.01 * s}},
        }
        for s in range(4)
    }
    refs = study.references(per_seed, [0, 1, 2])
    assert refs["de2"] == pytest.approx((0.21, 0.01))
    assert refs["val_de2"] == pytest.approx((0.11, 0.01))
    assert refs["ensemble_auroc_mi"] == pytest.approx((0.91, 0.01))
    cnll = {"be": [0.30, 0.31, 0.29, 0.10], "be + gaussian": [0.30, 0.31, 0.29, 0.30]}
    cnll["be + confods"] = [0.25, 0.26, 0.24]  # better on each shared seed; no seed 3
    for s in range(4):
        for name, values in cnll.items():
            if s < len(values):
                per_seed[s]["rows"][name] = {"cnll": values[s]} | dict.fromkeys(
                    ("ood_mi_ratio", "mi_spearman_ood", "dee", "ood_auroc_mi"), 0.5 + 0.01 * s
                )
    rows = seeds.rows_over_seeds(per_seed, ("cnll",))
    dm = study.dm_over_common_seeds(per_seed, rows)
    assert dm["seeds"] == [0, 1, 2]
    assert dm["gaps"]["cnll vs be"]["gap"] == pytest.approx(-0.05)  # not 0.25 - 0.2475
    assert dm["gaps"]["cnll vs be"]["win"]
    assert dm["means"]["be"]["cnll"] == pytest.approx((0.30, 0.01))  # BE over seeds 0-2
    del per_seed[2]["rows"]["be + confods"]
    assert study.dm_over_common_seeds(per_seed, seeds.rows_over_seeds(per_seed, ("cnll",))) is None


def test_the_diversity_figure_averages_each_model_over_the_seeds_that_have_it():
    """Seeds 3 and 4 trained for a few rows only: the chosen student (seeds 0-2) stays in the
    figure, averaged over its own seeds; an empty bin (None) is skipped."""

    def seed(**models):
        return {
            name: {"test": {"edges": [0.0, 0.5, 1.0], "diversity": values}}
            for name, values in models.items()
        }

    per_seed = [seed(be=[0.1, 0.3], hydra=[0.2, None]), seed(be=[0.3, 0.5])]
    got = study.mean_diversity(per_seed)
    assert got["be"]["test"]["diversity"] == pytest.approx([0.2, 0.4])
    assert got["hydra"]["test"] == {"edges": [0.0, 0.5, 1.0], "diversity": [0.2, None]}
