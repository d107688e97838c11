import torch

from ensemble_distill.models.heads import StackedMLPHeads


def test_batched_heads_equal_a_loop_over_plain_heads():
    heads = StackedMLPHeads(in_features=7, hidden=[5, 6], num_classes=3, members=4)
    features = torch.randn(9, 7)
    logits = heads(features)
    assert logits.shape == (9, 4, 3)
    for m in range(4):
        torch.testing.assert_close(logits[:, m], heads.head(m)(features))


def test_heads_slice_and_copy():
    heads = StackedMLPHeads(4, [8], 2, members=3)
    features = torch.randn(5, 4)
    torch.testing.assert_close(heads(features, slice(1, 2))[:, 0], heads(features)[:, 1])
    assert not torch.allclose(heads(features)[:, 0], heads(features)[:, 1])  # independent init
    heads.copy_head(0)
    logits = heads(features)
    for m in range(3):
        torch.testing.assert_close(logits[:, m], logits[:, 0])


def test_heads_without_hidden_layers_are_linear():
    heads = StackedMLPHeads(4, [], 3, members=2)
    features = torch.randn(5, 4)
    expected = features @ heads.weights[0][1] + heads.biases[0][1]
    torch.testing.assert_close(heads(features)[:, 1], expected)
