"""diversity_by_confidence on more inputs than one chunk, against a NumPy oracle."""

import numpy as np
import pytest
from scipy.special import rel_entr

from ensemble_distill import metrics
from ensemble_distill.metrics.diversity import CHUNK


def test_inputs_over_several_chunks_match_a_numpy_oracle(make_probs):
    num_bins = 6
    probs, _ = make_probs(2 * CHUNK + 37, 3, 4, scale=1.5)  # three chunks, the last partial
    result = metrics.diversity_by_confidence(probs, num_bins)

    p = probs.numpy()
    kl = rel_entr(p[:, :, None, :], p[:, None, :, :]).sum(-1)  # (N, M, M) KL(p_i ‖ p_j)
    diversity = kl.sum(axis=(1, 2)) / (3 * 2)  # the diagonal is 0
    confidence = p.mean(axis=1).max(axis=-1)
    edges = np.linspace(1 / 4, 1, num_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    assert result["mean"] == pytest.approx(diversity.mean(), rel=1e-12)
    assert result["counts"] == np.bincount(index, minlength=num_bins).tolist()
    for b, value in enumerate(result["diversity"]):
        inside = diversity[index == b]
        assert value == (pytest.approx(inside.mean(), rel=1e-12) if inside.size else None)
