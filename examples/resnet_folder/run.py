"""A ResNet-18 ensemble on a folder of colour images, distilled into Hydra, BatchEnsemble and KD
students from the command line, then one student exported to ONNX and run with onnxruntime.

1. The data: without ``--data-dir`` the script writes an image folder itself (coloured circles,
   squares, triangles and stripes as RGB PNGs in ``train/<class>/`` and ``test/<class>/``,
   random-noise images in ``ood/noise/``). ``--data-dir DIR`` takes your folder (``DIR/<class>/``
   or ``DIR/train/<class>/`` + ``DIR/test/<class>/``; see docs/your-own-data.md), or a
   ``.tar.gz`` of such a tree, of which the first ``--per-class`` images of each class are taken
   into ``OUT/data/`` (``--data-dir ../shared/data/cifar10-jpeg.tar.gz --per-class 50``).
2. The run: ``ensemble-distill run dataset=imagefolder model=nets:resnet18 student.head=fc
   "methods=[hydra, be, kd]"`` with this folder on ``PYTHONPATH``, so that ``nets`` imports.
   It trains M = 3 members, distils the three students, evaluates them and writes the run
   folder (``results.md``, ``report.html``, ``students/<method>/``).
3. The export: ``ensemble-distill export OUT/students/hydra --format onnx --trust-code``, then
   the file runs in onnxruntime on test and OOD images and is compared with the PyTorch
   student (``load_student(..., trust_code=True)``).

    python examples/resnet_folder/run.py                  # ~10 min on 2 busy CPU cores
    python examples/resnet_folder/run.py --tiny           # smoke run, seconds
    python examples/resnet_folder/run.py --width 64       # torchvision's full-width ResNet-18
    python examples/resnet_folder/run.py --per-class 50 \
        --data-dir ../shared/data/cifar10-jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CLASSES = ("circle", "square", "triangle", "stripes")
METHODS = ("hydra", "be", "kd")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/resnet_folder)")
    parser.add_argument("--data-dir", type=Path, help="your image folder, or a .tar.gz of one")
    parser.add_argument("--per-class", type=int, help="training images per class (default 150)")
    parser.add_argument("--image-size", type=int, help="side of the square images (default 32)")
    parser.add_argument("--width", type=int, help="ResNet-18 stem width (default 16; 64: full)")
    parser.add_argument("--members", type=int, default=3, help="ensemble members M")
    parser.add_argument("--epochs", type=int, help="member epochs (default 8)")
    parser.add_argument("--student-epochs", type=int, help="student epochs (default 16)")
    args = parser.parse_args(argv)
    tiny = {"per_class": 8, "image_size": 16, "width": 4, "epochs": 1, "student_epochs": 2}
    full = {"per_class": 150, "image_size": 32, "width": 16, "epochs": 8, "student_epochs": 16}
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = Path("runs") / ("resnet_folder-tiny" if args.tiny else "resnet_folder")
    return args


# --------------------------------------------------------------------------------------------
# 1. The data
# --------------------------------------------------------------------------------------------


def draw(shape: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """One (side, side, 3) uint8 image: ``shape`` in a random bright colour, at a random place
    and size, on a random dark background, with pixel noise."""
    background = rng.uniform(0.0, 0.4, 3)
    colour = rng.uniform(0.5, 1.0, 3)
    rows, cols = np.mgrid[0:side, 0:side] / side
    centre = rng.uniform(0.35, 0.65, 2)
    radius = rng.uniform(0.2, 0.35)
    dy, dx = rows - centre[0], cols - centre[1]
    if shape == "circle":
        mask = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        mask = (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    elif shape == "triangle":
        mask = (dy <= radius * 0.8) & (dy >= 2 * np.abs(dx) - radius)
    else:  # stripes, at a random angle and period
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(0.15, 0.3)
        mask = np.sin(2 * np.pi * (np.cos(angle) * dx + np.sin(angle) * dy) / period) > 0
    image = np.where(mask[..., None], colour, background) + rng.normal(0, 0.05, (side, side, 3))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def write_shapes(root: Path, per_class: int, side: int, seed: int = 0) -> Path:
    """``root/train/<class>/``, ``root/test/<class>/`` (a third as many) and ``root/ood/noise/``
    as PNGs; returns ``root``. The same arguments write the same bytes."""
    rng = np.random.default_rng(seed)
    counts = {"train": per_class, "test": max(2, per_class // 3)}
    for split, count in counts.items():
        for shape in CLASSES:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                Image.fromarray(draw(shape, side, rng)).save(folder / f"{k:04d}.png")
    noise = root / "ood" / "noise"
    noise.mkdir(parents=True, exist_ok=True)
    for k in range(counts["test"] * 2):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(noise / f"{k:04d}.png")
    return root


def extract_subset(archive: Path, root: Path, per_class: int) -> Path:
    """The first ``per_class`` images of each ``train/<class>/`` (a third as many of each
    ``test/<class>/``) in ``archive``, written under ``root``; other members are skipped."""
    limits = {"train": per_class, "test": max(2, per_class // 3)}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in limits:
                continue
            split, label, name = parts
            if name.startswith(".") or taken.get((split, label), 0) >= limits[split]:
                continue
            taken[(split, label)] = taken.get((split, label), 0) + 1
            target = root / split / label / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    if not taken:
        raise SystemExit(f"{archive} holds no train/<class>/<image> or test/<class>/<image>")
    return root


def class_count(data: Path, image_size: int) -> int:
    """The number of classes the package finds in ``data`` (what ``model_args`` must give)."""
    from ensemble_distill.data import create_dataset

    return create_dataset("imagefolder", data_dir=data, image_size=image_size).num_classes


# --------------------------------------------------------------------------------------------
# 2. The run and 3. the export, from the command line
# --------------------------------------------------------------------------------------------


def cli(*args: str) -> None:
    """``ensemble-distill ARGS`` with this folder on ``PYTHONPATH`` (so ``nets`` imports)."""
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    print("$ PYTHONPATH=" + shlex.quote(str(HERE)), "ensemble-distill", shlex.join(args))
    command = [sys.executable, "-m", "ensemble_distill", *args]
    subprocess.run(command, env=os.environ | {"PYTHONPATH": path}, check=True)


def compare_onnx(student_dir: Path, data: Path, image_size: int) -> None:
    """Run ``student_dir/student.onnx`` in onnxruntime on test (and OOD) images; print its
    outputs' largest difference from the PyTorch student's, and the mean MI of each set."""
    import onnxruntime
    import torch

    from ensemble_distill import load_student, mean_probs, uncertainty
    from ensemble_distill.data import create_dataset

    sys.path.insert(0, str(HERE))  # the manifest names nets:resnet18
    student = load_student(student_dir, trust_code=True)
    session = onnxruntime.InferenceSession(
        str(student_dir / "student.onnx"), providers=["CPUExecutionProvider"]
    )
    splits = create_dataset("imagefolder", data_dir=data, image_size=image_size)
    sets = {"test": splits.test.x[:256]} | {name: d.x[:256] for name, d in splits.ood.items()}
    for name, x in sets.items():
        names = [output.name for output in session.get_outputs()]
        onnx = dict(zip(names, session.run(None, {"x": x.numpy()}), strict=True))
        with torch.no_grad():
            torch_out = {"mean_probs": mean_probs(student, x)} | uncertainty(student, x)
        worst = max(
            float(np.abs(onnx[key] - torch_out[key].numpy()).max())
            for key in ("mean_probs", "entropy", "mutual_information")
        )
        mi = float(onnx["mutual_information"].mean())
        print(
            f"onnxruntime vs PyTorch on {len(x)} {name} images: max difference {worst:.2e}; "
            f"mean MI {mi:.4f}"
        )
        assert worst < 1e-4, f"the ONNX file disagrees with PyTorch by {worst}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import nets  # this folder is on sys.path when run as a script

    print(f"nets.resnet18: {nets.BACKEND}")
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"  # written anew each time, with the same bytes for the same options
    shutil.rmtree(data, ignore_errors=True)
    if args.data_dir is None:
        write_shapes(data, args.per_class, args.image_size)
    elif args.data_dir.is_file():
        extract_subset(args.data_dir, data, args.per_class)
    else:
        data = args.data_dir
    classes = class_count(data, args.image_size)
    print(f"data: {data} ({classes} classes)")
    run_dir = args.out / "run"
    cli(
        "run", "--out", str(run_dir), "--quiet",
        "dataset=imagefolder", f"data_dir={data}",
        f"dataset_args={{image_size: {args.image_size}}}",
        "model=nets:resnet18", f"model_args={{num_classes: {classes}, width: {args.width}}}",
        "student.head=fc", f"methods=[{', '.join(METHODS)}]",
        f"members={args.members}", f"epochs={args.epochs}",
        f"student.epochs={args.student_epochs}", "batch_size=32",
        "precision=fp32", "eval.latency_repeats=1",
    )  # fmt: skip
    student_dir = run_dir / "students" / "hydra"
    cli("export", str(student_dir), "--format", "onnx", "--trust-code")
    compare_onnx(student_dir, data, args.image_size)
    print(f"run folder: {run_dir} (report.html, results.md, students/)")


if __name__ == "__main__":
    main()
