"""Does bf16 autocast keep what fp32 trains? Teachers and KD students on MNIST, three seeds each
in fp32 and in bf16; writes docs/results/precision.{json,md}:

    python benchmarks/precision.py --data-dir ../shared/data --doc docs/results/precision

For each seed and precision: a deep ensemble of configs/mnist.yaml's members (M = 4, 4 epochs)
and a KD student (2x the teacher's epochs, the default recipe), scored on the test split (ACC,
and cNLL with the temperature fitted on validation). A precision keeps fp32's results when the
difference of the means over seeds is within twice the seeds' own spread (:func:`within_noise`);
tests/test_training.py runs the same comparison on digits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from seeds import mean_std, write_page

from ensemble_distill.config import build_config, load_config
from ensemble_distill.engine import (
    distill_student,
    load_data,
    prepare,
    teacher_train_outputs,
    train_teacher,
)
from ensemble_distill.evaluation import predict
from ensemble_distill.metrics import accuracy
from ensemble_distill.metrics.calibration import calibrated_metrics
from ensemble_distill.report.machine import machine_info, machine_line

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")
MODELS = ("teacher", "kd")
METRICS = ("acc", "cnll")


def run_seed(config, data=None) -> dict[str, dict[str, float]]:
    """Train the teacher and a KD student of ``config``; their test ACC and cNLL, and seconds."""
    setup = prepare(config, data)
    start = time.perf_counter()
    teacher, _ = train_teacher(setup)
    student, _ = distill_student(setup, teacher, "kd", teacher_train_outputs(setup, teacher))
    seconds = time.perf_counter() - start
    data = setup.data
    rows = {}
    for name, model in zip(MODELS, (teacher, student), strict=True):
        val, test = predict(model, data.val.x), predict(model, data.test.x)
        cnll = calibrated_metrics(val.probs, data.val.y, test.probs, data.test.y)["cnll"]
        rows[name] = {"acc": accuracy(test.probs, data.test.y), "cnll": cnll}
    rows["seconds"] = {"train": seconds}
    return rows


def compare(options: dict, seeds: list[int], data=None) -> dict:
    """Per precision and seed, :func:`run_seed` of ``options`` (a config as a dict)."""
    return {
        precision: {
            seed: run_seed(build_config(options | {"precision": precision, "seed": seed}), data)
            for seed in seeds
        }
        for precision in PRECISIONS
    }


def within_noise(runs: dict) -> dict[str, dict[str, dict]]:
    """Per model and metric: the means over seeds, the seeds' larger sample std, and whether
    |mean bf16 − mean fp32| ≤ 2 std (+ 1e-3 for the rounding of a metric that barely moves)."""
    verdict = {}
    for model in MODELS:
        verdict[model] = {}
        for metric in METRICS:
            values = {p: [seed[model][metric] for seed in runs[p].values()] for p in PRECISIONS}
            noise = max(statistics.stdev(v) for v in values.values())
            means = {p: statistics.fmean(v) for p, v in values.items()}
            gap = abs(means["bf16"] - means["fp32"])
            verdict[model][metric] = {
                "means": means,
                "noise": noise,
                "gap": gap,
                "within": gap <= 2 * noise + 1e-3,
            }
    return verdict


def markdown(record: dict) -> str:
    lines = [
        "# bf16 autocast against fp32 on MNIST",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. Seeds {', '.join(map(str, record['seeds']))}; "
        "teacher: configs/mnist.yaml with members=4 epochs=4 (MLP 400-400); KD student: the "
        "default recipe at 2x the teacher's epochs. Test split; cNLL after temperature scaling "
        "fitted on validation. *Within noise*: |mean bf16 − mean fp32| ≤ 2 × the larger "
        "sample std over seeds (+ 0.001).",
        "",
        "| model | metric | fp32 (mean ± std) | bf16 (mean ± std) | gap | 2 × noise "
        "| within noise |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    runs = record["runs"]
    for model in MODELS:
        for metric in METRICS:
            cells = []
            for precision in PRECISIONS:
                value = mean_std([seed[model][metric] for seed in runs[precision].values()])
                cells.append(f"{value[0]:.4f} ± {value[1]:.4f}")
            v = record["verdict"][model][metric]
            lines.append(
                f"| {model} | {metric} | {cells[0]} | {cells[1]} | {v['gap']:.4f} | "
                f"{2 * v['noise']:.4f} | {'yes' if v['within'] else '**no**'} |"
            )
    train = {
        p: mean_std([seed["seconds"]["train"] for seed in runs[p].values()]) for p in PRECISIONS
    }
    lines += [
        "",
        f"Training time per seed (teacher + student): fp32 {train['fp32'][0]:.0f} s, bf16 "
        f"{train['bf16'][0]:.0f} s, measured while other jobs shared the two cores: not a "
        "speed comparison (benchmarks.md times the settings round-robin: bf16 trains these "
        "MLPs about 2x faster on this machine).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder holding mnist/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "precision")
    parser.add_argument("--page-only", action="store_true", help="rewrite DOC.md from DOC.json")
    args = parser.parse_args()
    if args.page_only:
        write_page(args.doc, json.loads(args.doc.with_suffix(".json").read_text()), markdown)
        return
    base = load_config(
        ROOT / "configs" / "mnist.yaml",
        ["members=4", "epochs=4", "student.epochs_multiple=2"]
        + ([f"data_dir={args.data_dir}"] if args.data_dir else []),
    )
    options = base.to_dict() | {"methods": ["kd"]}
    runs = compare(options, args.seeds, load_data(base))  # one read of MNIST for all six runs
    record = {
        "command": "python benchmarks/precision.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "machine_line": machine_line(machine_info()),
        "seeds": args.seeds,
        "runs": runs,
        "verdict": within_noise(runs),
    }
    write_page(args.doc, record, markdown)


if __name__ == "__main__":
    main()
