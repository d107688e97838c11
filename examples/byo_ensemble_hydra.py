"""Bring your own ensemble: distil models you trained yourself into one Hydra student.

Three small MLPs are trained on scikit-learn's 8x8 digits with a plain PyTorch loop (stand-ins
for *your* models: any modules of one architecture work), turned into a teacher with
``teacher_from_modules`` and distilled into one network with a shared body and one head per
member. The script prints the test metrics of the ensemble, one member and the student, and
how much more uncertain (mutual information) each is on out-of-distribution inputs.

    python examples/byo_ensemble_hydra.py           # ~10 s on 2 CPU cores
    python examples/byo_ensemble_hydra.py --tiny    # a few seconds
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from ensemble_distill import distill, evaluate, teacher_from_modules, uncertainty


def make_mlp() -> nn.Module:
    """Your architecture: 64 pixels -> 10 logits."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def train_plain(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int
) -> nn.Module:
    """Your own training loop (nothing from ensemble_distill): Adam on cross-entropy."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3, help="ensemble size (default 3)")
    parser.add_argument("--epochs", type=int, help="epochs per member (default 30)")
    parser.add_argument("--student-epochs", type=int, help="Hydra student epochs (default 30)")
    parser.add_argument("--tiny", action="store_true", help="default epochs 3 and 2: a smoke run")
    args = parser.parse_args()
    args.epochs = args.epochs or (3 if args.tiny else 30)
    args.student_epochs = args.student_epochs or (2 if args.tiny else 30)

    # Your data: pixels scaled to [0, 1], int64 labels; train / validation / test splits.
    digits = load_digits()
    x_all, y_all = (digits.data / 16.0).astype(np.float32), digits.target
    x_rest, x_test, y_rest, y_test = train_test_split(
        x_all, y_all, test_size=0.2, stratify=y_all, random_state=0
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.1, stratify=y_rest, random_state=0
    )
    x_train, x_val, x_test = map(torch.from_numpy, (x_train, x_val, x_test))
    y_train, y_val, y_test = map(torch.from_numpy, (y_train, y_val, y_test))
    x_ood = 1.0 - x_test  # inverted digits: inputs unlike any training image

    # Your ensemble, trained your way.
    models = []
    for seed in range(args.members):
        torch.manual_seed(seed)
        models.append(train_plain(make_mlp(), x_train, y_train, args.epochs, seed))

    # Distil it: one body shared by M heads, head m imitating member m.
    teacher = teacher_from_modules(models)
    body = nn.Sequential(nn.Linear(64, 128), nn.ReLU())  # x -> (batch, 128) features
    student = distill(
        teacher,
        method="hydra",
        train_data=(x_train, y_train),
        val_data=(x_val, y_val),
        body=body,
        epochs=args.student_epochs,
        head_widths=[64],
    )

    print(f"{'model':10} {'acc':>6} {'nll':>6} {'ece':>6} {'cnll':>6} {'auroc(MI)':>9}")
    for name, model in (("ensemble", teacher), ("member 0", models[0]), ("hydra", student)):
        row = evaluate(model, (x_test, y_test), ood_data=x_ood, val_data=(x_val, y_val))
        print(
            f"{name:10} {row['acc']:6.3f} {row['nll']:6.3f} {row['ece']:6.3f} "
            f"{row['cnll']:6.3f} {row['ood_auroc_mi']:9.3f}"
        )
    for name, model in (("ensemble", teacher), ("hydra", student)):
        test_mi = uncertainty(model, x_test)["mutual_information"].mean()
        ood_mi = uncertainty(model, x_ood)["mutual_information"].mean()
        print(f"{name}: mean mutual information {test_mi:.4f} on test, {ood_mi:.4f} on OOD")


if __name__ == "__main__":
    main()
