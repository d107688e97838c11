"""Per-epoch progress files: an interrupted fit resumes to exactly the uninterrupted result."""

import pytest
import torch
from torch import nn

from ensemble_distill.config import OptimConfig
from ensemble_distill.errors import CheckpointError, EnsembleDistillError
from ensemble_distill.resume import Progress
from ensemble_distill.training import fit

X = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] > 0).long()
OPTIM = OptimConfig(name="adam", lr=0.01, schedule="cosine")


class Interrupted(Exception):
    """Stands in for a kill: raised from inside the loss at a chosen step."""


def make_model() -> nn.Module:
    torch.manual_seed(1)
    # Dropout draws from the global generator; BatchNorm has buffers: both must be restored.
    return nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.Dropout(0.3), nn.Linear(16, 2))


def train(model, progress=None, stop_at=None, epochs=4):
    noise = torch.Generator().manual_seed(7)  # a perturbation-like stream of the loss
    if progress is not None:
        progress = Progress(progress, model, generators=[noise])
    steps = []

    def loss_fn(index):
        if stop_at is not None and len(steps) == stop_at:
            raise Interrupted
        steps.append(1)
        model.train()
        x = X[index[0]] + 0.1 * torch.randn(X[index[0]].shape, generator=noise)
        return nn.functional.cross_entropy(model(x), Y[index[0]])

    seen = []
    history = fit(
        model.parameters(),
        loss_fn,
        num_examples=40,
        epochs=epochs,
        batch_size=8,
        optim=OPTIM,
        seeds=[3],
        quiet=True,
        on_step=seen.append,
        progress=progress,
    )
    return history, len(steps), seen


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("stop_at", [3, 5, 12, 19])  # mid-epoch, at a boundary, later epochs
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, stop_at):
    reference = make_model()
    expected, _, _ = train(reference)
    model, path = make_model(), tmp_path / "phase.safetensors"
    with pytest.raises(Interrupted):
        train(model, path, stop_at=stop_at)
    resumed = make_model()  # a fresh process: the weights come from the file
    history, steps, seen = train(resumed, path)
    done = 5 * (stop_at // 5)  # steps of the epochs that finished before the interruption
    assert steps == 20 - done and seen == list(range(done, 20))
    assert without_seconds(history) == without_seconds(expected)
    for a, b in zip(resumed.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_finished_phase_is_not_trained_again(tmp_path):
    path = tmp_path / "phase.safetensors"
    first, _, _ = train(make_model(), path)
    history, steps, _ = train(make_model(), path)
    assert steps == 0 and history == first


def test_progress_of_other_settings_is_refused(tmp_path):
    path = tmp_path / "phase.safetensors"
    train(make_model(), path, epochs=2)
    with pytest.raises(CheckpointError, match="other settings"):
        train(make_model(), path, epochs=3)


def test_a_damaged_progress_file_is_refused(tmp_path):
    path = tmp_path / "phase.safetensors"
    train(make_model(), path, epochs=1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable progress file"):
        train(make_model(), path)


def test_nan_loss_stops_and_names_the_last_good_epoch(tmp_path):
    path, model = tmp_path / "phase.safetensors", make_model()
    calls = []

    def loss_fn(index):
        calls.append(1)
        loss = nn.functional.cross_entropy(model(X[index[0]]), Y[index[0]])
        return loss * float("nan") if len(calls) > 7 else loss

    with pytest.raises(EnsembleDistillError, match="keeps epoch 1"):
        fit(
            model.parameters(),
            loss_fn,
            num_examples=40,
            epochs=3,
            batch_size=8,
            optim=OPTIM,
            seeds=[0],
            quiet=True,
            progress=Progress(path, model),
        )
    assert path.is_file()
