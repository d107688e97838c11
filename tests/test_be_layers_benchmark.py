"""benchmarks/be_layers.py: its two reference forms compute the shipped layers' function, and
(slow) a quick run writes its page and JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import be_layers  # noqa: E402

from ensemble_distill.models.batchensemble import BEConv2d, BELinear  # noqa: E402


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: BEConv2d(3, 4, 3, padding=1, members=2),
        lambda: BEConv2d(3, 4, 3, stride=2, bias=False, members=2),
        lambda: BELinear(5, 6, 2),
        lambda: BELinear(5, 6, 2, bias=False),
    ],
    ids=["conv", "conv, no bias", "linear", "linear, no bias"],
)
@pytest.mark.parametrize("form", [be_layers.scale_activations, be_layers.member_weights])
def test_every_form_computes_the_layer(make_layer, form):
    """The forms differ in cost only: each equals the shipped layer (float64)."""
    torch.manual_seed(0)
    layer = make_layer().double()
    with torch.no_grad():
        for param in (layer.r, layer.s, layer.bias):
            if param is not None:
                param.normal_(1.0, 0.5)
    shape = (4, 3, 6, 6) if isinstance(layer, BEConv2d) else (4, 5)
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(form(layer, x), layer(x))


@pytest.mark.slow
def test_quick_run_writes_its_page(tmp_path):
    doc = tmp_path / "be_layers"
    command = [sys.executable, "benchmarks/be_layers.py", "--quick", "--doc", str(doc)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    record = json.loads(doc.with_suffix(".json").read_text())
    row = record["rows"]["tiny-cnn"]
    assert set(row["ms"]) == {
        "plain, B rows",
        "plain, M·B rows",
        "scale activations",
        "member weights",
        "as shipped",
    }
    assert all(ms > 0 for ms in row["ms"].values())
    assert doc.with_suffix(".md").read_text() == be_layers.markdown(record)
