"""What streaming an image folder costs against holding the same images in memory; writes
docs/results/imagefolder.{json,md}:

    python benchmarks/imagefolder.py --data-dir ../shared/data --doc docs/results/imagefolder

The first ``--images`` MNIST training images are written as PNG files in class folders (a
scratch folder, removed afterwards), then, in one process on this machine:

* decoding: one pass over the training split (``ImageFiles.batches``) with 0, 1 and 2
  DataLoader worker processes, in images per second;
* training: the deep ensemble of configs/mnist.yaml (M = 4 here) for ``--epochs`` epochs on the
  streamed folder and on the same images decoded into memory, in seconds, with the two
  ensembles' weights compared (streamed training must give the in-memory weights);
* memory: the bytes the training inputs take in memory either way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from seeds import read_record, write_page

from ensemble_distill.config import load_config
from ensemble_distill.data import DataSplits, ImageFiles, create_dataset
from ensemble_distill.engine import prepare, train_teacher
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.resources import byte_text

ROOT = Path(__file__).resolve().parents[1]
WORKERS = (0, 1, 2)


def write_folder(data_dir: str, count: int, root: Path) -> None:
    """The first ``count`` MNIST training images as ``root/<digit>/<k>.png``."""
    mnist = create_dataset("mnist", data_dir=data_dir, val_fraction=0.1)
    pixels = (mnist.train.x[:count, 0] * 255).round().to(torch.uint8).numpy()
    for k, (image, label) in enumerate(zip(pixels, mnist.train.y[:count].tolist(), strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / f"{k:05d}.png")


def decoding_rate(files: ImageFiles, workers: int) -> float:
    """Images per second of one sequential pass with ``workers`` processes."""
    streamed = ImageFiles(files.paths, files.transform, workers=workers)
    start = time.perf_counter()
    count = sum(len(batch) for batch in streamed.batches(256))
    return count / (time.perf_counter() - start)


def train_seconds(config, data: DataSplits) -> tuple[float, dict[str, torch.Tensor]]:
    setup = prepare(config, data)
    start = time.perf_counter()
    teacher, _ = train_teacher(setup)
    return time.perf_counter() - start, teacher.state_dict()


def measure(data_dir: str, count: int, epochs: int, workers: int) -> dict:
    load = os.getloadavg()[0]  # other work on the machine slows both sides, decoding more
    scratch = Path(tempfile.mkdtemp(prefix="imagefolder-"))
    try:
        write_folder(data_dir, count, scratch)
        streamed = create_dataset("imagefolder", data_dir=scratch, workers=workers)
        files = streamed.train.x
        rates = {str(w): decoding_rate(files, w) for w in WORKERS}
        overrides = ["dataset=imagefolder", f"data_dir={scratch}", "members=4"]
        overrides += [f"epochs={epochs}", f"dataset_args={{workers: {workers}}}"]
        config = load_config(ROOT / "configs" / "mnist.yaml", overrides)
        memory = streamed.in_memory()
        seconds_streamed, weights_streamed = train_seconds(config, streamed)
        seconds_memory, weights_memory = train_seconds(config, memory)
    finally:
        shutil.rmtree(scratch)
    same = all(torch.equal(v, weights_memory[k]) for k, v in weights_streamed.items())
    path_bytes = sum(len(str(p)) for p in files.paths)
    return {
        "images": count,
        "train_images": len(files),
        "epochs": epochs,
        "members": config.members,
        "workers": workers,
        "decode_images_per_s": rates,
        "train_seconds": {"streamed": seconds_streamed, "in_memory": seconds_memory},
        "same_weights": same,
        "inputs_bytes": {"streamed": path_bytes, "in_memory": memory.train.x.numel() * 4},
        "load_average": load,
        "machine": machine_info(),
    }


def markdown(record: dict) -> str:
    seconds = record["train_seconds"]
    held = record["inputs_bytes"]
    weights = "bit-identical" if record["same_weights"] else "NOT the same"
    rates = record["decode_images_per_s"]
    lines = [
        "# Image folders: streamed from disk against held in memory",
        "",
        f"Machine: {machine_line(record['machine'])}; load average "
        f"{record['load_average']:.1f} when the run started (near or above the CPU count: "
        "other jobs shared the cores, and the worker processes had none of their own).",
        "",
        "Command: `python benchmarks/imagefolder.py --data-dir ../shared/data "
        "--doc docs/results/imagefolder`",
        "",
        f"{record['images']} MNIST training images written as PNG files in class folders "
        f"(`dataset=imagefolder`, {record['train_images']} of them in the training split).",
        "",
        "| decoding (one pass, batches of 256) | images / s |",
        "|---|---:|",
        *(f"| {w} worker process{'es' if w != '1' else ''} | {r:,.0f} |" for w, r in rates.items()),
        "",
        f"| training the teacher (M = {record['members']}, {record['epochs']} epochs, "
        f"{record['workers']} workers) | seconds | inputs in memory |",
        "|---|---:|---:|",
        f"| streamed from the files | {seconds['streamed']:.1f} | "
        f"{byte_text(held['streamed'])} (the file paths) |",
        f"| the same images in memory | {seconds['in_memory']:.1f} | "
        f"{byte_text(held['in_memory'])} (float32) |",
        "",
        f"Streamed / in memory: **{seconds['streamed'] / seconds['in_memory']:.2f}x** the "
        f"training time; the weights are {weights}.",
        "",
        "In memory, 50 000 RGB images at 224 x 224 would take "
        f"{byte_text(50_000 * 3 * 224 * 224 * 4)} as float32; streamed, a training step "
        "holds one batch (and the workers' few batches decoded ahead).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="workers while training")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "imagefolder")
    parser.add_argument(
        "--from-json", action="store_true", help="rewrite the page from its JSON (no timing)"
    )
    args = parser.parse_args()
    if args.from_json:
        record, _ = read_record(args.doc)
    else:
        record = measure(args.data_dir, args.images, args.epochs, args.workers)
    write_page(args.doc, record, markdown)


if __name__ == "__main__":
    main()
