import pytest
import torch

from ensemble_distill.config import OptimConfig
from ensemble_distill.data import ArrayDataset, DataSplits
from ensemble_distill.errors import ConfigError
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.teachers import DeepEnsemble, load_teacher, save_teacher, train_deep_ensemble
from ensemble_distill.teachers.train import should_vectorize

SPEC = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8]})


def test_forward_is_batch_members_classes_and_matches_each_member():
    members = [create_model(SPEC) for _ in range(4)]
    ensemble = DeepEnsemble(members)
    x = torch.rand(5, 1, 4, 4)
    logits = ensemble(x)
    assert logits.shape == (5, 4, 3)
    for m, member in enumerate(members):
        torch.testing.assert_close(logits[:, m], member(x))
        torch.testing.assert_close(ensemble.member(m)(x), member(x))


def test_forward_members_takes_one_batch_per_member():
    members = [create_model(SPEC) for _ in range(2)]
    x = torch.rand(2, 6, 1, 4, 4)
    out = DeepEnsemble(members).forward_members(x)
    torch.testing.assert_close(out[1], members[1](x[1]))


def test_convolutional_members_run_one_by_one_without_gradients_on_the_cpu(monkeypatch):
    cnn = ModelSpec("cnn", (1, 8, 8), 3, {"channels": [4]})
    members = [create_model(cnn) for _ in range(3)]
    ensemble = DeepEnsemble(members).eval()
    x = torch.rand(5, 1, 8, 8)
    stacked = ensemble(x)  # gradients on: stacked, as the training rule chose
    looped = []
    spy = ensemble._looped_forward
    monkeypatch.setattr(ensemble, "_looped_forward", lambda *a: looped.append(1) or spy(*a))
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), stacked.detach())
        torch.testing.assert_close(
            ensemble.forward_members(x.expand(3, *x.shape)), stacked.detach().transpose(0, 1)
        )
        assert len(looped) == 2
        ensemble.loop_inference = False  # forced: stacked
        ensemble(x)
        assert len(looped) == 2
        mlp = DeepEnsemble([create_model(SPEC) for _ in range(2)])
        assert not mlp.loops_inference(torch.rand(1))  # fully connected: stacked pays
    assert not DeepEnsemble(members).loops_inference(x)  # gradients: the training rule's


def test_vectorised_training_equals_training_members_one_by_one(splits):
    optim = OptimConfig(lr=1e-2)
    kwargs = dict(members=3, seed=1, epochs=2, batch_size=16, optim=optim, quiet=True)
    vectorised, history_v = train_deep_ensemble(SPEC, splits, vectorize="true", **kwargs)
    looped, history_l = train_deep_ensemble(SPEC, splits, vectorize="false", **kwargs)
    for name, value in vectorised.state_dict().items():
        torch.testing.assert_close(value, looped.state_dict()[name], atol=1e-5, rtol=1e-4)
    assert len(history_v) == 2 and len(history_l) == 3 * 2  # rows per epoch / per member


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("vectorize", ["true", "false"])
def test_training_improves_on_separable_data(splits, vectorize, precision):
    ensemble, history = train_deep_ensemble(
        SPEC,
        splits,
        members=2,
        seed=0,
        epochs=15,
        batch_size=16,
        optim=OptimConfig(lr=1e-2),
        vectorize=vectorize,
        precision=precision,  # bf16: autocast only, weights and optimiser state stay fp32
        quiet=True,
    )
    assert all(p.dtype == torch.float32 for p in ensemble.parameters())
    assert history[-1]["loss"] < history[0]["loss"]
    accuracy = (ensemble(splits.test.x).mean(1).argmax(-1) == splits.test.y).float().mean()
    assert accuracy > 0.9


def test_unknown_precision_is_refused(splits):
    with pytest.raises(ConfigError, match="precision=fp32 or precision=bf16"):
        train_deep_ensemble(
            SPEC,
            splits,
            members=1,
            seed=0,
            epochs=1,
            batch_size=16,
            optim=OptimConfig(),
            precision="fp16",
            quiet=True,
        )


def test_save_load_round_trip(tmp_path, splits):
    ensemble = DeepEnsemble([create_model(SPEC, splits.mean, splits.std) for _ in range(3)])
    save_teacher(tmp_path, ensemble, SPEC, {"dataset": "tiny"})
    loaded, manifest = load_teacher(tmp_path)
    assert manifest["members"] == 3 and manifest["model"]["name"] == "mlp"
    torch.testing.assert_close(loaded(splits.test.x), ensemble.eval()(splits.test.x))


def test_auto_vectorisation_stacks_mlps_and_small_convolutional_ensembles():
    big_mlp = [create_model(ModelSpec("mlp", (1, 64, 64), 3, {"widths": [1024]}))] * 2
    assert should_vectorize("auto", [create_model(SPEC)] * 3)
    assert should_vectorize("auto", big_mlp)  # 8.4 M weights: fully connected, still stacked
    cnn = ModelSpec("cnn", (1, 28, 28), 10, {"channels": [8, 16], "hidden": 256, "pool_size": 7})
    assert should_vectorize("auto", [create_model(cnn)] * 10)  # 2 M weights
    assert not should_vectorize("auto", [create_model(cnn)] * 50)  # 10 M weights
    assert not should_vectorize("false", [create_model(SPEC)] * 3)


def test_auto_vectorisation_loops_wide_convolutions_on_the_cpu_only():
    wide = [create_model(ModelSpec("cnn", (3, 32, 32), 10, {}))] * 4  # 32 and 64 channels
    assert not should_vectorize("auto", wide)
    assert should_vectorize("auto", wide, device="cuda")
    narrow = [create_model(ModelSpec("cnn", (3, 32, 32), 10, {"channels": [16, 16]}))] * 4
    assert should_vectorize("auto", narrow)


def test_auto_vectorisation_loops_vmapped_networks_on_the_cpu_only():
    resnets = [create_model(ModelSpec("resnet20", (3, 32, 32), 10, {}))] * 4  # 1.1 M weights
    assert not should_vectorize("auto", resnets)
    assert should_vectorize("auto", resnets, device="cuda")  # no probe: vmap not tried
    assert should_vectorize("true", resnets)


AUGMENTED = dict(members=2, seed=1, epochs=2, batch_size=16, optim=OptimConfig(lr=1e-2))


def test_augmented_training_is_the_same_stacked_or_looped_and_not_the_plain_one(splits):
    kwargs = dict(AUGMENTED, augment_shift=1, quiet=True)
    vectorised, _ = train_deep_ensemble(SPEC, splits, vectorize="true", **kwargs)
    looped, _ = train_deep_ensemble(SPEC, splits, vectorize="false", **kwargs)
    plain, _ = train_deep_ensemble(SPEC, splits, vectorize="true", **AUGMENTED, quiet=True)
    for name, value in vectorised.state_dict().items():
        torch.testing.assert_close(value, looped.state_dict()[name], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(vectorised.state_dict()[name], plain.state_dict()[name])


class Interrupted(Exception):
    """Stands in for a kill, raised from inside a training step."""


@pytest.mark.parametrize("vectorize", ["true", "false"])
def test_an_interrupted_augmented_teacher_resumes_to_the_same_weights(
    splits, tmp_path, monkeypatch, vectorize
):
    """The augmentation streams are saved with the progress and restored on resume."""
    import ensemble_distill.teachers.train as train_module

    kwargs = dict(AUGMENTED, augment_shift=1, vectorize=vectorize, quiet=True)
    reference, _ = train_deep_ensemble(SPEC, splits, **kwargs)
    real, calls = train_module.shift_and_flip, []

    def killed_at_the_sixth_batch(*args, **kw):
        if len(calls) == 5:
            raise Interrupted
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(train_module, "shift_and_flip", killed_at_the_sixth_batch)
    with pytest.raises(Interrupted):  # 4 batches an epoch: the kill falls in the second
        train_deep_ensemble(SPEC, splits, progress_dir=tmp_path, **kwargs)
    monkeypatch.undo()
    resumed, _ = train_deep_ensemble(SPEC, splits, progress_dir=tmp_path, **kwargs)
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[name], rtol=0, atol=0)


def test_augmenting_inputs_that_are_not_images_is_refused(splits):
    flat = DataSplits(
        "flat",
        *(ArrayDataset(s.x.flatten(1), s.y) for s in (splits.train, splits.val, splits.test)),
        splits.num_classes,
        {},
    )
    spec = ModelSpec("mlp", (16,), 3, {"widths": [8]})
    with pytest.raises(ConfigError, match=r"augment_shift=2 shifts images.*set teacher"):
        train_deep_ensemble(spec, flat, augment_shift=2, **AUGMENTED, quiet=True)
