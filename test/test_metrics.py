"""Mask agreement metrics on constructed masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vbp_ros.explain.metrics import pearson, top_fraction_overlap


def masks(batch: int = 3, size: int = 20) -> torch.Tensor:
    """Masks with distinct pixel values (no ties in the top sets)."""
    generator = torch.Generator().manual_seed(0)
    return torch.stack([torch.randperm(size * size, generator=generator).float()
                        .reshape(1, size, size) for _ in range(batch)])


def test_pearson_identical_negated_and_affine() -> None:
    a = masks()
    torch.testing.assert_close(pearson(a, a), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(pearson(a, -a), -torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(pearson(a, 3 * a + 7), torch.ones(3, dtype=torch.float64))


def test_pearson_known_value_and_numpy_input() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    b = np.array([1.0, 3.0, 2.0, 4.0]).reshape(1, 1, 2, 2)
    assert pearson(a, b).item() == pytest.approx(0.8)
    assert torch.isnan(pearson(a, np.ones_like(a))).all()


def test_top_fraction_overlap_identical_and_disjoint() -> None:
    a = masks()
    assert torch.equal(top_fraction_overlap(a, a), torch.ones(3, dtype=torch.float64))
    assert torch.equal(top_fraction_overlap(a, -a), torch.zeros(3, dtype=torch.float64))


def test_top_fraction_overlap_partial() -> None:
    a = torch.arange(100.0).reshape(1, 1, 10, 10)  # top 10%: pixels 90..99
    b = a.clone()
    b.view(-1)[[95, 96, 97, 98, 99]] = -1.0  # b's top 10%: pixels 85..94
    assert top_fraction_overlap(a, b, fraction=0.1).item() == pytest.approx(0.5)
    assert top_fraction_overlap(b, a, fraction=0.1).item() == pytest.approx(0.5)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError):
        pearson(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError):
        top_fraction_overlap(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), fraction=0)
