"""benchmarks/reproduce_hydra_mnist.py: its default-heads row trains what HydraConfig defaults
to, and its page renders both Hydra rows with their floors from the committed record."""

import json
import sys
from pathlib import Path

from ensemble_distill.config import load_config
from ensemble_distill.methods.hydra import HydraConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import reproduce_hydra_mnist as reproduction  # noqa: E402

HEAD_DESIGN = ("head_widths", "head_init", "head_init_std", "split")


def test_the_default_heads_row_is_hydras_default_head_design():
    paper = load_config(ROOT / "configs" / "hydra_mnist.yaml").hydra
    default_heads = load_config(
        ROOT / "configs" / "hydra_mnist.yaml", reproduction.HEAD_DEFAULTS
    ).hydra
    for key in HEAD_DESIGN:
        assert getattr(default_heads, key) == getattr(HydraConfig(), key)
    assert paper.mlp_widths == [100, 100] and paper.head_init == "copy"  # the paper's heads
    for key in ("temperature", "alpha", "phase1_fraction"):  # the recipe is the config's
        assert getattr(default_heads, key) == getattr(paper, key)


def test_the_page_shows_both_hydra_rows_and_their_floors():
    record = json.loads((ROOT / "docs" / "results" / "hydra_mnist.json").read_text())
    page = reproduction.markdown(record)
    name = reproduction.NAMES[reproduction.DEFAULT_HEADS]
    assert page.count(name) >= 3  # its row, the recipe note and the floors' column
    assert page == (ROOT / "docs" / "results" / "hydra_mnist.md").read_text()
