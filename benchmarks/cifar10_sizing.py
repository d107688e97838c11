"""What a CIFAR-10 study costs on this machine (issue 32, items 1 and 6): decoding the JPEG copy
(held in memory against streamed from the files), and one epoch of a teacher member and of the
KD and BatchEnsemble students for the small ``cnn``, ``resnet20`` and ``resnet32``, in fp32 on
NCHW images against what ``precision=auto`` / ``memory_format=auto`` choose here, with the
achieved fraction of the fp32 GEMM peak; then the study's cost projected from those epochs.
Writes docs/results/cifar10_sizing.{json,md}:

    python benchmarks/cifar10_sizing.py --data-dir ../shared/data --doc docs/results/cifar10_sizing

The timed images are the first ``--per-class`` training images of every class of
``DIR/cifar10-jpeg.tar.gz``, extracted once to runs/cifar10_sizing/; an epoch over the 45,000
training images of a real run is projected as 45,000 x the seconds per image measured here
(the median over the timed epochs, the first excluded). ``--quick``: a few images and one
model, for the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import tarfile
import time
from pathlib import Path

import torch
from performance import distill_epoch, epoch_seconds, gemm_peak, train_flops_per_example
from seeds import write_page

from ensemble_distill.config import build_config
from ensemble_distill.data.image_files import batches_of
from ensemble_distill.engine import prepare
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.teachers.train import train_from_config

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = "cifar10-jpeg.tar.gz"
TRAIN_IMAGES = 45_000  # CIFAR-10's 50,000 training images less a 10 % validation split
MODELS = ("cnn", "resnet20", "resnet32")
FP32 = {"precision": "fp32", "memory_format": "contiguous"}
AUTO = {"precision": "auto", "memory_format": "auto"}
# name -> (settings, images held in memory); streamed for one model: the decoding's share
VARIANTS = {"fp32, NCHW": (FP32, True), "auto": (AUTO, True), "auto, streamed": (AUTO, False)}
STREAMED_MODEL = "resnet20"
# The study this sizes: M members for E epochs, students at B x the teacher's epochs.
PLAN = {"members": 4, "epochs": 30, "student_multiple": 2, "seeds": 3}
PAPER_MEMBERS = 50  # the Hydra paper's CIFAR-10 ensemble


def extract_subset(archive: Path, out: Path, per_class: int) -> Path:
    """The first ``per_class`` training and ``per_class // 5`` test images of every class of
    ``archive`` (names in sorted order), extracted once under ``out``."""
    done = out / f".extracted-{per_class}"
    if done.is_file():
        return out
    counts: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3:
                continue
            split, label, _ = parts
            limit = per_class if split == "train" else max(1, per_class // 5)
            key = f"{split}/{label}"
            if counts.get(key, 0) < limit:
                counts[key] = counts.get(key, 0) + 1
                tar.extract(member, out, filter="data")
    done.touch()
    return out


def config_for(folder: Path, model: str, in_memory: bool, **overrides):
    return build_config(
        {
            "dataset": "imagefolder",
            "data_dir": str(folder),
            "dataset_args": {"in_memory": in_memory},
            "model": model,
            "members": 1,
            "batch_size": 128,
            "methods": ["kd"],
            "ood": "none",
        }
        | overrides
    )


def decoding(folder: Path) -> dict[str, float]:
    """Images per second, decoded once into memory by the loader and in one streamed pass;
    the size of the training split."""
    start = time.perf_counter()
    setup = prepare(config_for(folder, "cnn", in_memory=True))
    train = len(setup.data.train)
    images = train + len(setup.data.val) + len(setup.data.test)
    in_memory = images / (time.perf_counter() - start)
    streamed = prepare(config_for(folder, "cnn", in_memory=False)).data.train.x
    start = time.perf_counter()
    for _ in batches_of(streamed, 256):
        pass
    return {
        "images": images,
        "train_images": train,
        "in_memory_per_s": in_memory,
        "streamed_per_s": len(streamed) / (time.perf_counter() - start),
    }


def epochs(folder: Path, model: str, variant: str, timed_epochs: int, peak: float) -> dict:
    """Seconds per training image of one teacher member and of the KD and BE students (M = 4),
    and the member's achieved GFLOP/s."""
    settings, in_memory = VARIANTS[variant]
    config = config_for(folder, model, in_memory, epochs=timed_epochs, **settings)
    config = dataclasses.replace(config, student=dataclasses.replace(config.student, epochs=2))
    setup = prepare(config)
    images = len(setup.data.train)
    torch.manual_seed(0)
    _, history = train_from_config(
        setup.teacher_spec, setup.data, setup.config, setup.device, quiet=True
    )
    member = epoch_seconds(history) / images
    flops = train_flops_per_example(setup)
    four = dataclasses.replace(setup, config=dataclasses.replace(setup.config, members=4))
    teacher, stacked = None, {}
    # M = 4 members stacked (one vmapped computation) against one after another, in memory
    for mode in ("true", "false") if variant == "auto" else ("auto",):
        config = dataclasses.replace(
            four.config,
            epochs=2 if variant == "auto" else 1,
            teacher=dataclasses.replace(four.config.teacher, vectorize=mode),
        )
        teacher, history = train_from_config(
            four.teacher_spec, four.data, config, four.device, quiet=True
        )
        stacked[mode] = epoch_seconds(history) / images
    return {
        "model": model,
        "variant": variant,
        "precision": setup.config.precision,
        "memory_format": setup.config.memory_format,
        "member_s_per_image": member,
        "kd_s_per_image": distill_epoch(four, teacher, "kd", live=False)[0] / images,
        "be_s_per_image": distill_epoch(four, teacher, "be", live=False)[0] / images,
        "teacher_stacked_s_per_image": stacked.get("true"),
        "teacher_looped_s_per_image": stacked.get("false"),
        "train_flops_per_image": flops,
        "gflops": flops / member / 1e9,
        "fraction_of_peak": flops / member / 1e9 / peak,
    }


def projection(row: dict) -> dict[str, float]:
    """Hours of the planned study per seed, and of a 50-member teacher, from one row."""
    member_epoch = row["member_s_per_image"] * TRAIN_IMAGES
    student_epochs = PLAN["epochs"] * PLAN["student_multiple"]
    teacher = PLAN["members"] * PLAN["epochs"] * member_epoch
    kd = student_epochs * row["kd_s_per_image"] * TRAIN_IMAGES
    be = student_epochs * row["be_s_per_image"] * TRAIN_IMAGES
    return {
        "member_epoch_s": member_epoch,
        "teacher_h": teacher / 3600,
        "kd_h": kd / 3600,
        "be_h": be / 3600,
        # KD, EnD² x2 targets, Hydra x2 heads: about a KD each; BE, BE + 3 inputs, LatentBE
        "seed_h": (teacher + 5 * kd + 5 * be) / 3600,
        "paper_teacher_h": PAPER_MEMBERS * PLAN["epochs"] * member_epoch / 3600,
    }


def markdown(record: dict) -> str:
    decode, plan = record["decoding"], PLAN
    lines = [
        "# What a CIFAR-10 study costs on this machine",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. Timed on the first "
        f"{record['per_class']} training images of each class of the JPEG copy "
        f"({record['train_images']} in the training split after the 10 % validation split), "
        "batch 128; one epoch of 45,000 images is projected as 45,000 x the seconds per "
        "image measured (the median epoch, the first excluded). fp32 GEMM peak: "
        f"{record['peak_gflops']:.0f} GFLOP/s.",
        "",
        "## Decoding the JPEG files",
        "",
        "| decoding | images / s | 50,000 images |",
        "|---|---:|---:|",
        f"| into memory (`dataset_args.in_memory=true`) | {decode['in_memory_per_s']:,.0f} | "
        f"{50_000 / decode['in_memory_per_s']:.0f} s once |",
        f"| streamed from the files, one pass | {decode['streamed_per_s']:,.0f} | "
        f"{50_000 / decode['streamed_per_s']:.0f} s every epoch |",
        "",
        "## One epoch",
        "",
        "GFLOP/s: one member's training FLOPs per second; *of peak*: of the fp32 GEMM peak "
        "(bf16 steps can pass it).",
        "",
        "| model | setting | one member, s / epoch | GFLOP/s | of peak | KD student, s / "
        "epoch | BE student (M = 4), s / epoch |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in record["rows"]:
        setting = f"{row['variant']} ({row['precision']}, {row['memory_format']})"
        lines.append(
            f"| {row['model']} | {setting} | {row['member_s_per_image'] * TRAIN_IMAGES:.1f} | "
            f"{row['gflops']:.0f} | {row['fraction_of_peak']:.0%} | "
            f"{row['kd_s_per_image'] * TRAIN_IMAGES:.1f} | "
            f"{row['be_s_per_image'] * TRAIN_IMAGES:.1f} |"
        )
    lines += [
        "",
        "## The teacher's M = 4 members: stacked or one after another (`auto` setting)",
        "",
        "Stacked: `teacher.vectorize=true`, one computation for all members (grouped layers for "
        "the `cnn`, `torch.func.vmap` for the ResNets); one by one: `teacher.vectorize=false`.",
        "",
        "| model | stacked, s / epoch | one by one, s / epoch | stacked / looped |",
        "|---|---:|---:|---:|",
    ]
    for row in record["rows"]:
        if row["teacher_stacked_s_per_image"] is None:
            continue
        stacked, looped = row["teacher_stacked_s_per_image"], row["teacher_looped_s_per_image"]
        lines.append(
            f"| {row['model']} | {stacked * TRAIN_IMAGES:.1f} | {looped * TRAIN_IMAGES:.1f} | "
            f"{stacked / looped:.2f}x |"
        )
    lines += [
        "",
        f"## The study, projected (the `auto` rows; M = {plan['members']}, "
        f"{plan['epochs']} teacher epochs, students at {plan['student_multiple']}x)",
        "",
        "Per seed: the teacher, five students that cost about a KD student each (KD, EnD² "
        "with both targets, Hydra with the paper's and the default heads) and five that cost "
        f"a BatchEnsemble student each (BE, BE + Gaussian / ODS / ConfODS, LatentBE). A "
        f"{PAPER_MEMBERS}-member teacher as in the Hydra paper, for comparison.",
        "",
        "| model | teacher, h | KD student, h | BE student, h | one seed, h | "
        f"{plan['seeds']} seeds, h | M = {PAPER_MEMBERS} teacher, h |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["rows"]:
        if row["variant"] != "auto":  # in memory, as the study runs
            continue
        p = projection(row)
        lines.append(
            f"| {row['model']} | {p['teacher_h']:.1f} | {p['kd_h']:.1f} | {p['be_h']:.1f} | "
            f"{p['seed_h']:.1f} | {plan['seeds'] * p['seed_h']:.1f} | "
            f"{p['paper_teacher_h']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help=f"folder holding {ARCHIVE}")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "cifar10_sizing")
    parser.add_argument("--per-class", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per member")
    parser.add_argument("--quick", action="store_true", help="a few images, the cnn: a test")
    args = parser.parse_args()
    models, per_class, timed = MODELS, args.per_class, args.epochs
    if args.quick:
        models, per_class, timed = ("cnn",), 12, 2
    folder = extract_subset(
        Path(args.data_dir) / ARCHIVE,
        ROOT / "runs" / "cifar10_sizing" / str(per_class),
        per_class,
    )
    peak = gemm_peak("cpu", 5)["peak_gflops"]
    runs = [
        (m, v)
        for m in models
        for v in VARIANTS
        if "streamed" not in v or m in (STREAMED_MODEL, models[0])
    ]
    rows = [epochs(folder, model, variant, timed, peak) for model, variant in runs]
    decode = decoding(folder)
    record = {
        "command": f"python benchmarks/cifar10_sizing.py --data-dir {args.data_dir} "
        f"--doc {args.doc.relative_to(ROOT) if args.doc.is_relative_to(ROOT) else args.doc}",
        "machine": machine_info(),
        "machine_line": machine_line(machine_info()),
        "per_class": per_class,
        "train_images": decode.pop("train_images"),
        "peak_gflops": peak,
        "decoding": decode,
        "rows": rows,
        "projection": {f"{r['model']}, {r['variant']}": projection(r) for r in rows},
    }
    write_page(args.doc, record, markdown)


if __name__ == "__main__":
    main()
