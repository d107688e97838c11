"""Your own dataset: tensors in memory, or a folder of images, distilled into KD and Hydra.

Part 1 — tensors: a 2-D three-arm spiral held as (x, y) tensors. A 5-member MLP ensemble is
trained with ``train_teacher`` and distilled into a KD and a Hydra student built from a
registered architecture (``model="mlp"``).

Part 2 — a folder of images, one sub-folder per class (``DIR/<class>/*.png``), read by a small
torch ``Dataset`` with PIL. Without ``--image-dir`` the script first writes such a folder of
16x16 PNGs (circles, squares, crosses) to a temporary directory. The ``Dataset`` (split with
``random_split``) goes to the API as it is; the teacher is a CNN ensemble, the students use your
own convolutional body.

    python examples/own_dataset.py                     # ~15 s on 2 CPU cores
    python examples/own_dataset.py --tiny              # a few seconds
    python examples/own_dataset.py --image-dir DIR     # your images (any size, grey or RGB)
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, random_split

from ensemble_distill import distill, evaluate, train_teacher

SHAPES = ("circle", "square", "cross")
SIDE = 16


# --------------------------------------------------------------------------------------------
# Part 1: tensors
# --------------------------------------------------------------------------------------------


def spiral(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy points on three spiral arms; label = arm."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    radius = torch.rand(n, generator=generator)
    angle = 4.0 * radius + y * (2 * math.pi / 3) + 0.2 * torch.randn(n, generator=generator)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return x, y


def tensors_part(epochs: int, members: int) -> None:
    x, y = spiral(1500, seed=0)
    x_test, y_test = spiral(500, seed=1)

    teacher = train_teacher((x, y), members=members, model_args={"widths": [64, 64]}, epochs=epochs)
    report("tensors: ensemble", teacher, (x_test, y_test))
    options = {"kd": {}, "hydra": {"head_widths": [32]}}  # method options, as in the config
    for method in ("kd", "hydra"):
        student = distill(
            teacher,
            method=method,
            train_data=(x, y),  # 10 % held out for validation, seeded
            model="mlp",
            model_args={"widths": [64, 64]},
            epochs=epochs,
            **options[method],
        )
        report(f"tensors: {method}", student, (x_test, y_test))


# --------------------------------------------------------------------------------------------
# Part 2: a folder of images
# --------------------------------------------------------------------------------------------


class ImageFolder(Dataset):
    """``root/<class>/<image>``: (1 or 3, H, W) float tensors in [0, 1] and int64 labels, the
    classes in sorted folder order. Read with PIL (every image must have one size)."""

    SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

    def __init__(self, root: Path, grey: bool = True) -> None:
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.items = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((root / name).iterdir())
            if path.suffix.lower() in self.SUFFIXES
        ]
        if not self.items:
            raise SystemExit(f"no images in {root}/<class>/; expected e.g. {root}/cat/001.png")
        self.mode = "L" if grey else "RGB"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(self.mode), dtype=np.float32) / 255.0
        x = torch.from_numpy(pixels)
        x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)  # (C, H, W)
        return x, label


def write_shapes(root: Path, per_class: int, seed: int = 0) -> None:
    """``per_class`` noisy 16x16 PNGs of each shape into ``root/<shape>/``."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    for name in SHAPES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cy, cx = rng.uniform(5, SIDE - 5, size=2)
            size = rng.uniform(2.5, 4.5)
            if name == "circle":
                mask = (rows - cy) ** 2 + (cols - cx) ** 2 <= size**2
            elif name == "square":
                mask = (abs(rows - cy) <= size) & (abs(cols - cx) <= size)
            else:
                mask = ((abs(rows - cy) <= 1) | (abs(cols - cx) <= 1)) & (
                    (abs(rows - cy) <= size) & (abs(cols - cx) <= size)
                )
            pixels = np.clip(0.8 * mask + rng.normal(0.1, 0.08, mask.shape), 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")


def images_part(root: Path, epochs: int, members: int) -> None:
    images = ImageFolder(root)
    test_size = max(1, len(images) // 5)
    train, test = random_split(
        images, [len(images) - test_size, test_size], torch.Generator().manual_seed(0)
    )
    print(f"images: {len(images)} in {len(images.classes)} classes {images.classes} from {root}")
    small = {"epochs": epochs, "batch_size": 16}  # few images: small batches, more steps
    teacher = train_teacher(train, members=members, model="cnn", **small)  # a Dataset
    report("images: ensemble", teacher, test)
    channels = images[0][0].shape[0]
    body = nn.Sequential(  # your own body: images -> (batch, 32) features
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    for method in ("kd", "hydra"):
        student = distill(teacher, method=method, train_data=train, body=body, **small)
        report(f"images: {method}", student, test)


def report(name: str, model: nn.Module, test) -> None:
    row = evaluate(model, test)
    print(f"{name:18} acc {row['acc']:.3f}  nll {row['nll']:.3f}  mean MI {row['mi']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", type=Path, help="your images: DIR/<class>/*.png")
    parser.add_argument("--epochs", type=int, help="teacher and student epochs (default 20)")
    parser.add_argument("--members", type=int, help="ensemble size (default 5)")
    parser.add_argument(
        "--tiny", action="store_true", help="defaults 2 epochs, 3 members, 20 images per class"
    )
    args = parser.parse_args()
    args.epochs = args.epochs or (2 if args.tiny else 20)
    args.members = args.members or (3 if args.tiny else 5)
    per_class = 20 if args.tiny else 60  # images per class written without --image-dir

    tensors_part(args.epochs, args.members)
    if args.image_dir is not None:
        images_part(args.image_dir, args.epochs, args.members)
        return
    with tempfile.TemporaryDirectory() as folder:
        write_shapes(Path(folder), per_class)
        images_part(Path(folder), args.epochs, args.members)


if __name__ == "__main__":
    main()
