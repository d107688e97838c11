"""StackedLayerHeads: M copies of a plain layer stack on shared features, as one computation."""

import torch
from torch import nn

from ensemble_distill.models.heads import StackedLayerHeads


def tail() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 4),
    )


def test_heads_equal_their_tails_run_one_by_one():
    tails = [tail().eval() for _ in range(3)]
    heads = StackedLayerHeads(tails).eval()
    features = torch.randn(5, 2, 6, 6)
    with torch.no_grad():
        outputs = heads(features)
        assert outputs.shape == (5, 3, 4)
        for m, module in enumerate(tails):
            torch.testing.assert_close(outputs[:, m], module(features))
            torch.testing.assert_close(heads(features, slice(m, m + 1))[:, 0], outputs[:, m])


def test_one_head_trains_alone_and_copies_with_its_statistics():
    heads = StackedLayerHeads([tail() for _ in range(3)])
    norm = heads.stacked[1]
    heads.train()(torch.randn(8, 2, 6, 6) + 3.0, slice(0, 1))  # phase 1: head 0 only
    assert (norm.running_mean[0] != 0).all() and (norm.running_mean[1:] == 0).all()
    assert norm.num_batches_tracked.tolist() == [1, 0, 0]
    heads.copy_head(0)
    for tensor in [*heads.parameters(), *heads.buffers()]:
        assert all(torch.equal(tensor[m], tensor[0]) for m in range(3))
