"""data/augment.py: each output image is a crop of the zero-padded input (flipped, for 3
channels), checked by searching every offset; seeded; the input's layout kept."""

import pytest
import torch
import torch.nn.functional as F

from ensemble_distill.data.augment import shift_and_flip


def crops(image: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """Every crop of ``image`` zero-padded by ``shift``: the reference's candidates."""
    _, height, width = image.shape
    padded = F.pad(image, (shift, shift, shift, shift))
    return [
        padded[:, dy : dy + height, dx : dx + width]
        for dy in range(2 * shift + 1)
        for dx in range(2 * shift + 1)
    ]


@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_is_a_crop_of_its_padded_self_flipped_only_in_colour(channels):
    x = torch.rand(16, channels, 6, 5, generator=torch.Generator().manual_seed(0))
    out = shift_and_flip(x, 2, torch.Generator().manual_seed(1))
    flipped = 0
    for image, result in zip(x, out, strict=True):
        plain = any(torch.equal(result, crop) for crop in crops(image, 2))
        mirrored = any(torch.equal(result, crop.flip(-1)) for crop in crops(image, 2))
        assert plain or (channels == 3 and mirrored)
        flipped += mirrored and not plain
    assert channels == 1 or 0 < flipped < 16  # a fair coin over 16 images


def test_no_shift_leaves_grey_images_as_they_are_and_a_seed_repeats_itself():
    x = torch.rand(4, 1, 5, 5)
    assert torch.equal(shift_and_flip(x, 0, torch.Generator().manual_seed(0)), x)
    a = shift_and_flip(x, 2, torch.Generator().manual_seed(3))
    assert torch.equal(a, shift_and_flip(x, 2, torch.Generator().manual_seed(3)))


def test_a_channels_last_batch_stays_channels_last():
    x = torch.rand(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    out = shift_and_flip(x, 1, torch.Generator().manual_seed(0))
    assert out.stride() == x.stride() and not out.requires_grad
