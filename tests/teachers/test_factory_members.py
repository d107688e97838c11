"""Models from an import path (``model=package.module:factory``): members, students, errors."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from ensemble_distill.cli import main
from ensemble_distill.config import OptimConfig
from ensemble_distill.errors import ConfigError
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.teachers import DeepEnsemble, load_teacher, train_deep_ensemble
from ensemble_distill.teachers.train import should_vectorize

# A user's own network: a custom forward with a LeakyReLU and a data-dependent branch, which
# torch.func.vmap cannot run (so the members cannot be stacked).
NETS = '''
import torch
from torch import nn

CALLS = 0


class GatedNet(nn.Module):
    def __init__(self, inputs=64, hidden=16, classes=10, slope=0.1, gate=True):
        super().__init__()
        self.hidden = nn.Linear(inputs, hidden)
        self.act = nn.LeakyReLU(slope)
        self.out = nn.Linear(hidden, classes)
        self.gate = gate

    def forward(self, x):
        h = self.act(self.hidden(x.flatten(1)))
        if self.gate and h.abs().max() > 1e4:  # data-dependent: refused by vmap
            h = h / h.abs().max()
        return self.out(h)


def gated_net(**kwargs):
    return GatedNet(**kwargs)


def drifting_net(**kwargs):
    """Each call another LeakyReLU slope: members that differ in a setting."""
    global CALLS
    CALLS += 1
    return GatedNet(slope=0.1 * CALLS, **kwargs)


NOT_A_FACTORY = 3
'''
MODULE = "ed_test_user_nets"
MODEL = f"model={MODULE}:gated_net"
NO_ARGS = "model_args={}"  # the factory's own defaults, as a model without model_args gets
TINY = ["members=2", "epochs=1", "precision=fp32", "eval.latency_repeats=1", "--quiet"]


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """The module above, importable as :data:`MODULE` for this test only."""
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield __import__(MODULE)
    sys.modules.pop(MODULE, None)


def test_create_model_calls_the_factory_with_model_args(nets):
    model = create_model(ModelSpec(f"{MODULE}:gated_net", (1, 8, 8), 10, {"hidden": 7}))
    assert type(model) is nets.GatedNet and model.hidden.out_features == 7


def test_members_vmap_cannot_run_are_trained_and_evaluated_one_by_one(nets):
    members = [nets.GatedNet() for _ in range(3)]
    x = torch.rand(5, 1, 8, 8)
    # Off the CPU (where auto stacks vmapped networks at all), the probe decides.
    assert not should_vectorize("auto", members, x, device="cuda")
    assert should_vectorize("auto", [nets.GatedNet(gate=False) for _ in range(3)], x, "cuda")
    ensemble = DeepEnsemble(members).eval()
    with torch.no_grad():
        expected = torch.stack([member(x) for member in members], dim=1)
        torch.testing.assert_close(ensemble(x), expected)
        apart = torch.rand(3, 5, 1, 8, 8)  # one batch per member
        torch.testing.assert_close(ensemble.forward_members(apart)[2], members[2](apart[2]))


def test_stacked_training_of_members_vmap_cannot_run_falls_back_to_a_loop(nets, splits):
    spec = ModelSpec(f"{MODULE}:gated_net", (1, 4, 4), 3, {"inputs": 16, "classes": 3})
    kwargs = dict(members=2, seed=0, epochs=2, batch_size=16, optim=OptimConfig(lr=1e-2))
    ensemble, history = train_deep_ensemble(spec, splits, vectorize="true", quiet=True, **kwargs)
    assert len(history) == 2 and "member" not in history[0]  # trained stacked, run looped
    assert history[-1]["loss"] < history[0]["loss"]
    with torch.no_grad():
        torch.testing.assert_close(ensemble(splits.test.x)[:, 1], ensemble.member(1)(splits.test.x))


@pytest.mark.slow  # long end to end: `make test-all` only
def test_a_factory_teacher_with_kd_and_endd_students_runs_end_to_end(nets, tmp_path):
    out = tmp_path / "out"
    # No model_args: the factory's own defaults, not the mlp's widths (issue 32).
    assert main(["run", "--out", str(out), MODEL, "methods=[kd, endd]", *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {"ensemble", "member", "kd", "endd"} <= set(results["methods"])
    history = (out / "teacher" / "history.csv").read_text()
    assert history.startswith("member,")  # auto: trained member by member, not stacked
    manifest = json.loads((out / "students" / "kd" / "manifest.json").read_text())
    assert manifest["model"]["name"] == f"{MODULE}:gated_net"


def test_factory_members_from_files(nets, tmp_path):
    torch.manual_seed(0)
    members = [nets.GatedNet(hidden=8) for _ in range(2)]
    files = []
    for index, member in enumerate(members):
        files.append(tmp_path / f"m{index}.safetensors")
        save_file(member.state_dict(), files[-1])
    out = tmp_path / "out"
    args = ["train-teacher", "--out", str(out), MODEL, "model_args={hidden: 8}"]
    assert main([*args, f"teacher.members=[{files[0]}, {files[1]}]", *TINY]) == 0
    assert "methods:\n- kd\n- endd\n" in (out / "config.yaml").read_text()  # not hydra
    teacher, _ = load_teacher(out / "teacher", trust_code=True)  # our folder: its import path
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x)[:, 1], members[1](x), rtol=0, atol=0)


def test_members_that_differ_in_a_setting_are_refused(nets, tmp_path, capsys):
    files = []
    for index in range(2):
        files.append(tmp_path / f"m{index}.safetensors")
        save_file(nets.GatedNet().state_dict(), files[-1])
    out = tmp_path / "out"
    model = f"model={MODULE}:drifting_net"
    members = f"teacher.members=[{files[0]}, {files[1]}]"
    assert main(["train-teacher", "--out", str(out), model, NO_ARGS, members, *TINY]) == 2
    err = capsys.readouterr().err
    assert "member 1 differs from member 0 in the setting 'negative_slope'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [MODEL, NO_ARGS, "methods=[hydra]"],
            "set student.head=NAME, the attribute path of its final Linear layer (its Linear "
            "layers: hidden, out)",
        ),
        (
            [MODEL, NO_ARGS, "student.head=hidden", "methods=[hydra]"],
            "without student.head='hidden' gives an error (RuntimeError: mat1 and mat2",
        ),
        (
            [MODEL, NO_ARGS, "student.head=out", "hydra.split=1", "methods=[hydra]"],
            "builds a GatedNet: set hydra.split=null for heads on its features",
        ),
        (
            ["model=ed_no_such_module_xyz:net"],
            "cannot import module ed_no_such_module_xyz (No module named",
        ),
        ([f"model={MODULE}:missing"], f"{MODULE} has no attribute 'missing'"),
        ([f"model={MODULE}:NOT_A_FACTORY"], "NOT_A_FACTORY is a int, not a function"),
        ([MODEL, "model_args={classes: 3}"], "gives outputs (2, 3) for inputs (2, 1, 8, 8)"),
        ([MODEL, "model_args={inputs: 5}"], "cannot take inputs of shape (2, 1, 8, 8)"),
        ([MODEL, "model_args={depth: 5}"], "bad arguments {'depth': 5}"),
        (["model=a b:c"], "must be an import path package.module:factory"),
    ],
)
def test_bad_factory_models_exit_2_with_one_line_and_write_nothing(
    nets, tmp_path, capsys, args, message
):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), *args, *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("ensemble-distill: error:")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_a_factory_that_returns_no_module_is_refused(nets):
    spec = ModelSpec(f"{MODULE}:drifting_net.__doc__.strip", (1, 8, 8), 10, {})
    with pytest.raises(ConfigError, match=r"returned a str, not a torch\.nn\.Module"):
        create_model(spec)
