"""``tensorboard=true``: every phase's per-step loss and per-epoch metrics under OUT/tb/<phase>.

The oracle is each phase's history.csv (and ``fit``'s own history): the events must hold one
loss per optimisation step, whose per-epoch means are the history's losses, and at each
epoch's last step the history's learning rate and validation metrics.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ensemble_distill import cli, distributed, engine, pipeline, training
from ensemble_distill.config import OptimConfig, config_from_options, load_config
from ensemble_distill.errors import ConfigError
from ensemble_distill.resume import Progress
from ensemble_distill.tensorboard_log import MISSING, phase_log

TINY = ["members=2", "epochs=2", "batch_size=128", "model_args={widths: [16]}"]


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the TensorBoard run ``run`` as (step, value) pairs, purges applied
    as TensorBoard applies them."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(run), size_guidance={accumulator.SCALARS: 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def read_history(path: Path) -> list[dict[str, float]]:
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def check_against_history(logged: dict, history: list[dict], steps_per_epoch: int, n: int, bs: int):
    """``logged`` holds one loss per step (steps 1, 2, ...), the epoch means of which are the
    history's losses, and each history row's lr and metrics at its epoch's last step."""
    losses = logged["loss/train"]
    assert [step for step, _ in losses] == list(range(1, len(history) * steps_per_epoch + 1))
    sizes = [min(bs, n - start) for start in range(0, n, bs)]
    for index, row in enumerate(history):
        epoch = [value for _, value in losses[index * steps_per_epoch :][:steps_per_epoch]]
        mean = sum(v * size for v, size in zip(epoch, sizes, strict=True)) / n
        assert mean == pytest.approx(row["loss"], rel=1e-5)
        end = (index + 1) * steps_per_epoch
        for key, tag in (("lr", "lr"), ("val_acc", "val/acc"), ("val_nll", "val/nll")):
            assert (end, pytest.approx(row[key], rel=1e-6, abs=1e-12)) in logged[tag]
    assert all(len(logged[tag]) == len(history) for tag in ("lr", "val/acc", "val/nll"))


@pytest.mark.parametrize("vectorize", ["true", "false"])
def test_every_phase_logs_its_steps_and_the_metrics_of_history_csv(tmp_path, vectorize):
    pytest.importorskip("tensorboard")
    overrides = [*TINY, "methods=[kd,hydra]", "student.epochs=3", "tensorboard=true"]
    config = load_config(overrides=[*overrides, f"teacher.vectorize={vectorize}"])
    out = tmp_path / "out"
    pipeline.run(config, out, steps=("teacher", "distill"), quiet=True)
    n = len(engine.load_data(config).train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["hydra", "kd", "teacher"]
    # Looped members (2 x 2 epochs) and Hydra's two phases continue one step count.
    rows = {"teacher": 2 if vectorize == "true" else 4, "kd": 3, "hydra": 3}
    for phase, folder in (
        ("teacher", "teacher"),
        ("kd", "students/kd"),
        ("hydra", "students/hydra"),
    ):
        history = read_history(out / folder / "history.csv")
        assert len(history) == rows[phase]
        check_against_history(scalars(out / "tb" / phase), history, steps_per_epoch, n, 128)
    assert {row["phase"] for row in read_history(out / "students/hydra/history.csv")} == {1, 2}


def test_missing_package_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    out = tmp_path / "out"
    code = cli.main(["run", "--out", str(out), "--quiet", *TINY, "tensorboard=true"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"ensemble-distill: error: {MISSING}\n"
    assert not out.exists()


def test_the_api_refuses_the_key_it_cannot_honour():
    with pytest.raises(ConfigError, match="'tensorboard' is not an option here"):
        config_from_options({}, {"tensorboard": True})


def tiny_fit(out: Path, epochs: int, progress: Path | None = None) -> list[dict]:
    """A linear model on random data fitted under ``phase_log`` into ``out/tb/p``."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=generator), torch.randint(3, (40,), generator=generator)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)

    def loss_fn(index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x[index[0]]), y[index[0]])

    with phase_log(True, out, "p"):
        return training.fit(
            model.parameters(),
            loss_fn,
            num_examples=40,
            epochs=epochs,
            batch_size=16,
            optim=OptimConfig(lr=0.1),
            seeds=[0],
            quiet=True,
            on_epoch=lambda epoch: {"val_w": model.weight.detach().sum().item()},
            progress=None if progress is None else Progress(progress, model),
        )


class Killed(Exception):
    """The process dies between logging an epoch and saving its progress."""


def test_a_resumed_phase_logs_every_step_once_as_an_uninterrupted_one(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    reference = tiny_fit(tmp_path / "reference", epochs=3)
    save = training.save_progress

    def killed_at_epoch_2(progress, *, position, **state):  # epoch 2 logged, never saved
        if position.epoch == 2:
            raise Killed
        save(progress, position=position, **state)

    monkeypatch.setattr(training, "save_progress", killed_at_epoch_2)
    with pytest.raises(Killed):
        tiny_fit(tmp_path / "resumed", epochs=3, progress=tmp_path / "p.safetensors")
    monkeypatch.setattr(training, "save_progress", save)
    history = tiny_fit(tmp_path / "resumed", epochs=3, progress=tmp_path / "p.safetensors")
    assert [r["loss"] for r in history] == [r["loss"] for r in reference]
    resumed, uninterrupted = (
        scalars(tmp_path / "resumed/tb/p"),
        scalars(tmp_path / "reference/tb/p"),
    )
    assert resumed == uninterrupted
    assert [step for step, _ in resumed["val/w"]] == [3, 6, 9]


def test_only_the_main_rank_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    tiny_fit(tmp_path, epochs=1)
    assert not (tmp_path / "tb").exists()
