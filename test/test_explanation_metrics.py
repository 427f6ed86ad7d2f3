"""Explanation-quality metrics on constructed masks and tiny fixed models with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from vbp_ros.explain.explanation_metrics import (deletion_insertion, lane_mass_ratio, mass_ratio,
                                                 pointing_game, random_mask_like, shift_test)


class PixelWeights(nn.Module):
    """Linear steering "model" y = sum(w * x) with a fixed (1, C, H, W) weight map."""

    def __init__(self, weights: Tensor) -> None:
        super().__init__()
        self.register_buffer('weights', weights)

    def forward(self, x: Tensor) -> Tensor:
        return (x * self.weights).sum(dim=(1, 2, 3)).unsqueeze(1)


def lanes_on_left_quarter(batch: int = 2, size: int = 8) -> Tensor:
    lanes = torch.zeros(batch, 1, size, size, dtype=torch.bool)
    lanes[..., : size // 4] = True
    return lanes


def test_mass_ratio_all_mass_on_lanes_uniform_and_none() -> None:
    lanes = lanes_on_left_quarter()
    expected = torch.full((2,), 4.0, dtype=torch.float64)
    torch.testing.assert_close(mass_ratio(lanes.double() * 3, lanes), expected)
    torch.testing.assert_close(mass_ratio(torch.ones(2, 1, 8, 8), lanes), expected / 4)
    torch.testing.assert_close(mass_ratio((~lanes).float(), lanes), expected * 0)
    assert lane_mass_ratio is mass_ratio
    # No image of a kind (vbp-eval on frames without distractors): no ratio, no IndexError.
    assert mass_ratio(torch.ones(0, 1, 8, 8), lanes[:0]).shape == (0,)


def test_mass_ratio_nan_cases_numpy_and_checks() -> None:
    lanes = lanes_on_left_quarter().numpy()
    lanes[1] = False
    mask = np.ones((2, 1, 8, 8))
    mask[0] = 0
    assert torch.isnan(mass_ratio(mask, lanes)).all()
    with pytest.raises(ValueError):
        mass_ratio(-torch.ones(2, 1, 8, 8), lanes)
    with pytest.raises(ValueError):
        mass_ratio(torch.ones(2, 1, 8, 8), lanes.astype(float))
    with pytest.raises(ValueError):
        mass_ratio(torch.ones(2, 1, 8, 7), lanes)


def test_pointing_game_tolerance() -> None:
    lanes = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    lanes[0, 0, 5, 2] = True
    mask = torch.zeros(1, 1, 10, 10)
    mask[0, 0, 5, 2] = 1
    assert pointing_game(mask, lanes).item() == 1.0
    mask = torch.zeros(1, 1, 10, 10)
    mask[0, 0, 2, 5] = 1  # 3 px away in both directions (Chebyshev distance 3)
    assert pointing_game(mask, lanes, tolerance=2).item() == 0.0
    assert pointing_game(mask, lanes, tolerance=3).item() == 1.0


def test_pointing_game_ties_and_empty_region() -> None:
    lanes = lanes_on_left_quarter()
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, 0, 0, 7] = 1
    mask[0, 0, 7, 0] = 1  # a second maximum of image 0 lies on a lane
    assert pointing_game(mask, lanes, tolerance=0).tolist() == [1.0, 0.0]
    lanes[1] = False
    assert math.isnan(pointing_game(torch.zeros(2, 1, 8, 8), lanes)[1].item())


def linear_setup() -> tuple[PixelWeights, Tensor, Tensor]:
    """Positive weights on a tenth of the pixels, where x = 1; x lies in [0, 0.5] elsewhere."""
    generator = torch.Generator().manual_seed(0)
    weighted = torch.rand(1, 1, 10, 10, generator=generator) < 0.1
    weights = torch.where(weighted, torch.rand(1, 1, 10, 10, generator=generator) + 0.5, 0.0)
    x = torch.rand(3, 2, 10, 10, generator=generator, dtype=torch.float64) / 2
    x = torch.where(weighted, 1.0, x)
    return PixelWeights(weights.expand(1, 2, 10, 10).double()), x, weights.expand(3, 1, 10, 10)


def test_deletion_ranks_weights_above_random_and_inverse_masks() -> None:
    model, x, weights = linear_setup()
    random = random_mask_like(weights, torch.Generator().manual_seed(1))
    good, by_chance, inverse = (deletion_insertion(model, x, mask).deletion_aopc
                                for mask in (weights, random, -weights))
    assert (good > by_chance).all() and (by_chance > inverse).all()


def test_insertion_ranks_weights_above_random() -> None:
    model, x, weights = linear_setup()
    random = random_mask_like(weights, torch.Generator().manual_seed(1))
    good = deletion_insertion(model, x, weights).insertion_aopc
    assert (good > deletion_insertion(model, x, random).insertion_aopc).all()


def test_curve_end_points() -> None:
    model, x, weights = linear_setup()
    original = x.clone()
    curves = deletion_insertion(model, x, weights, steps=5)
    baseline = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    expected = (model(baseline) - model(x)).squeeze(1).abs()
    torch.testing.assert_close(curves.fractions, torch.linspace(0, 1, 6, dtype=torch.float64))
    torch.testing.assert_close(curves.deletion_curve[:, -1], expected)
    torch.testing.assert_close(curves.insertion_outputs[:, -1], model(x).squeeze(1))
    assert (curves.deletion_curve[:, 0] == 0).all() and (curves.insertion_curve[:, -1] == 0).all()
    torch.testing.assert_close(curves.insertion_aopc,
                               (expected[:, None] - curves.insertion_curve).mean(dim=1))
    assert torch.equal(x, original)


def test_batch_size_zero_baseline_and_mode_do_not_change_results() -> None:
    model, x, weights = linear_setup()
    model.train()
    whole = deletion_insertion(model, x, weights, steps=4, baseline=0.0, batch_size=1000)
    chunked = deletion_insertion(model, x, weights, steps=4, baseline=0.0, batch_size=1)
    torch.testing.assert_close(whole.deletion_outputs, chunked.deletion_outputs)
    torch.testing.assert_close(whole.insertion_outputs, chunked.insertion_outputs)
    torch.testing.assert_close(whole.deletion_curve[:, -1], model(x).squeeze(1).abs())
    assert model.training


def test_ties_are_ranked_in_raster_order() -> None:
    x = torch.ones(1, 1, 2, 2)
    for pixel in range(4):
        weights = torch.zeros(1, 1, 2, 2)
        weights.view(-1)[pixel] = 1
        curve = deletion_insertion(PixelWeights(weights), x, torch.zeros(1, 1, 2, 2), steps=4,
                                   baseline=0.0).deletion_curve
        assert curve[0].tolist() == [0.0] * (pixel + 1) + [1.0] * (4 - pixel)


def test_random_mask_like_is_reproducible() -> None:
    mask = torch.zeros(2, 1, 3, 4)
    first = random_mask_like(mask, torch.Generator().manual_seed(3))
    assert first.shape == mask.shape and first.dtype == torch.float32
    assert torch.equal(first, random_mask_like(mask, torch.Generator().manual_seed(3)))


def stripe_setup() -> tuple[PixelWeights, Tensor, Tensor, Tensor]:
    """A model that sums columns 10..13 of bright x; x is dim random content elsewhere."""
    stripe = torch.zeros(1, 1, 8, 64, dtype=torch.float64)
    stripe[..., 10:14] = 1
    x = torch.rand(2, 1, 8, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.where(stripe > 0, 1.0, x / 2)
    elsewhere = torch.zeros_like(x)
    elsewhere[..., 40:44] = 1
    return PixelWeights(stripe), x, stripe.expand(2, 1, 8, 64), elsewhere


def test_shift_test_separates_stripe_mask_from_wrong_mask() -> None:
    model, x, stripe, elsewhere = stripe_setup()
    original = x.clone()
    good = shift_test(model, x, stripe, shift=20, fraction=4 / 64)
    assert (good.salient_shift_change > 5).all() and (good.background_shift_change < 1e-12).all()
    assert (good.ratio > 1e6).all()
    assert torch.equal(good.region, stripe > 0)
    wrong = shift_test(model, x, elsewhere, shift=20, fraction=4 / 64, batch_size=1)
    assert (wrong.salient_shift_change < 1e-12).all() and (wrong.background_shift_change > 5).all()
    assert torch.equal(x, original)


@pytest.mark.parametrize('shift, salient, background', [
    (2, [0, 1, 2, 3, 2], [0, 0, 0, 1, 4]),
    (-2, [2, 1, 2, 3, 4], [0, 3, 4, 4, 4]),
])
def test_shift_test_images_and_edges(shift: int, salient: list[float],
                                     background: list[float]) -> None:
    x = torch.arange(5.0).view(1, 1, 1, 5)
    mask = torch.zeros(1, 1, 1, 5)
    mask.view(-1)[4 if shift > 0 else 0] = 1  # the salient pixel leaves the image
    result = shift_test(PixelWeights(torch.ones(1, 1, 1, 5)), x, mask, shift=shift, fraction=0.2)
    assert result.salient_shifted.view(-1).tolist() == salient
    assert result.background_shifted.view(-1).tolist() == background
    assert result.output.item() == 10
