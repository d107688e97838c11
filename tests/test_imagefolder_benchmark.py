"""benchmarks/imagefolder.py end to end on a few hundred MNIST images: the streamed teacher's
weights equal the in-memory one's, and the page reports every measurement."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))
import imagefolder  # noqa: E402

pytestmark = pytest.mark.slow  # benchmark on real data (../shared/data): `make test-all` only


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="needs ../shared/data/mnist")
def test_streamed_and_in_memory_training_agree_and_the_page_says_so():
    record = imagefolder.measure(str(SHARED), count=300, epochs=1, workers=1)
    assert record["same_weights"] and record["train_images"] < 300
    assert set(record["decode_images_per_s"]) == {"0", "1", "2"}
    assert record["inputs_bytes"]["in_memory"] == record["train_images"] * 28 * 28 * 4
    page = imagefolder.markdown(record)
    assert "bit-identical" in page and "| 2 worker processes |" in page
