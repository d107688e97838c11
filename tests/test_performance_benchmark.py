"""benchmarks/performance.py --quick: runs, writes its page and JSON, and its arithmetic holds.

Speeds are never asserted (the machines are noisy); what the page derives from them is."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # benchmark smoke run: `make test-all` only

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> dict:
    doc = tmp_path_factory.mktemp("bench") / "benchmarks"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "performance.py"), "--quick", "--doc", str(doc)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    page = doc.with_suffix(".md").read_text()
    sections = ("GEMM peak", "Teacher training", "Distillation epoch", "Inference", "Precision")
    for section in (*sections, "Checks"):
        assert section in page
    return json.loads(doc.with_suffix(".json").read_text())


def test_training_flops_match_the_closed_form_of_the_digits_mlp(record):
    # Forward 2·Σ I·O, weight gradients 2·Σ I·O, input gradients of every layer but the first
    # (the data needs none): 64 -> 256 -> 256 -> 10.
    layers = [(64, 256), (256, 256), (256, 10)]
    macs = [i * o for i, o in layers]
    expected = 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])
    assert {row["train_flops_per_example"] for row in record["teacher"]} == {expected}


def test_derived_figures_follow_from_the_measured_times(record):
    peak = record["gemm"]["peak_gflops"]
    assert peak == max(record["gemm"]["gflops_by_size"].values())
    for row in record["teacher"]:
        examples = row["members"] * row["examples"]  # the digits training split per member
        assert row["examples_per_s"] == pytest.approx(examples / row["seconds_per_epoch"])
        flops = examples * row["train_flops_per_example"]
        assert row["gflops"] == pytest.approx(flops / row["seconds_per_epoch"] / 1e9)
        assert row["fraction_of_peak"] == pytest.approx(row["gflops"] / peak)
    assert sum(row["auto"] for row in record["teacher"]) == len(record["teacher"]) / 2
    kd = next(r for r in record["distill"] if r["method"] == "kd" and r["teachers"] == "cached")
    for row in record["distill"]:
        assert row["over_kd"] == pytest.approx(row["seconds_per_epoch"] / kd["seconds_per_epoch"])


def test_inference_rows_count_parameters_and_flops_of_each_model(record):
    rows = {(r["members"], r["model"]): r for r in record["inference"]["by_members"]}
    for members in record["settings"]["inference_members"]:
        member, ensemble = rows[members, "member"], rows[members, "ensemble"]
        assert ensemble["params"] == members * member["params"]
        assert ensemble["flops"] == members * member["flops"]
        assert rows[members, "kd"]["params"] == member["params"]  # same body, linear head
        assert rows[members, "hydra"]["flops"] > member["flops"]
    for row in rows.values():
        assert row["throughput_b256"] == pytest.approx(1 / row["latency_s_b256"])
        measured = row["model"] in record["settings"]["rss_models"]
        assert (row["peak_rss_mib"] is not None) == measured


def test_variant_rows_resolve_auto_and_derive_their_ratios(record):
    rows = {(r["variant"], r["phase"]): r for r in record["variants"]}
    kinds = ("gaussian", "ods", "confods", "mixup", "mixture")  # performance.py: POOLED_KINDS
    pooled = {f"kd+{kind}, pool 4" for kind in kinds}
    assert {phase for _, phase in rows} == {"teacher", "kd", "kd+mixup", *pooled}
    assert {variant for variant, phase in rows if phase in pooled} == {"auto"}
    for phase in pooled:
        assert rows["auto", phase]["one_off_seconds"] > 0  # the pool's build, timed apart
        assert rows["auto", phase]["speedup"] is None  # no fp32 reference was pooled
    for (variant, phase), row in rows.items():
        if phase in pooled:
            continue
        assert row["one_off_seconds"] is None
        reference = rows["fp32, NCHW", phase]["seconds_per_epoch"]
        assert row["speedup"] == pytest.approx(reference / row["seconds_per_epoch"])
        cached = rows[variant, "kd"]["seconds_per_epoch"]
        assert row["over_cached_kd"] == pytest.approx(row["seconds_per_epoch"] / cached)
    auto = rows["auto", "teacher"]
    assert auto["precision"] in ("fp32", "bf16")  # resolved, never "auto"
    assert auto["memory_format"] == "channels_last"  # the digits CNN's images
    assert rows["fp32, NCHW", "teacher"]["memory_format"] == "contiguous"


def test_every_check_states_its_floor_and_whether_it_was_met(record):
    assert record["checks"]
    for check in record["checks"]:
        assert check["met"] in (True, False, None) and check["value"] > 0
