"""How good a saliency mask is as an explanation of a steering network, one value per image.

Every function works with any saliency method (VisualBackProp, LRP, ...). Masks are
(B, 1, H, W) tensors or numpy arrays at the input's resolution; region masks (ground-truth lanes,
stop lines, crosswalks) are boolean arrays of the same shape. The steering network is a regression
network with one output per image. Results are float64 tensors of shape (B,) unless stated.

Ground-truth agreement:

* :func:`mass_ratio` (alias :func:`lane_mass_ratio`): the share of the mask's mass on a region
  divided by the region's share of the image area (1 = no preference).
* :func:`pointing_game`: whether the mask's maximum lies on (or within a tolerance of) a region.

Faithfulness to the model:

* :func:`deletion_insertion`: region perturbation (Samek et al. 2017, "Evaluating the
  visualization of what a deep neural network has learned") with curves and AOPC.
* :func:`shift_test`: the NVIDIA shift test (Bojarski et al. 2017, "Explaining how a deep neural
  network trained with end-to-end learning steers a car").
* :func:`random_mask_like`: a random mask, the usual reference ordering for both.

The model-calling functions run the model on the device of ``x`` under ``torch.inference_mode``
in batches of at most ``batch_size`` images, leave its train/eval mode as the caller set it (set
eval first) and never modify ``x``.

Pixel order: pixels are ranked by decreasing mask value; equal values are ranked in raster order
(row by row, top-left first), so results are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['mass_ratio', 'lane_mass_ratio', 'pointing_game', 'random_mask_like',
           'deletion_insertion', 'PerturbationCurves', 'shift_test', 'ShiftTestResult']

ArrayLike = Tensor | np.ndarray


def _mask_and_region(mask: ArrayLike, region: ArrayLike) -> tuple[Tensor, Tensor]:
    """Check shapes; return the mask as float64 and the region as bool, on the mask's device."""
    mask, region = torch.as_tensor(mask), torch.as_tensor(region)
    if mask.shape != region.shape or mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f'expected a (B, 1, H, W) mask and region of one shape, got '
                         f'{tuple(mask.shape)} and {tuple(region.shape)}')
    if region.dtype != torch.bool:
        raise ValueError(f'region must be boolean, got {region.dtype}')
    return mask.detach().double(), region.to(mask.device)


def mass_ratio(mask: ArrayLike, region: ArrayLike) -> Tensor:
    """Share of the mask's mass on ``region`` divided by the region's share of the area.

    ``(sum of mask on region / sum of mask) / (region pixels / all pixels)``: 1 means no
    preference for the region, ``1 / area share`` that all mass lies on it, 0 that none does.
    NaN for images whose mask sums to 0 or whose region is empty. The mask must be non-negative
    (take the absolute value of signed relevance first).
    """
    mask, region = _mask_and_region(mask, region)
    if (mask < 0).any():
        raise ValueError('mask must be non-negative')
    dims = (1, 2, 3)
    mass_share = (mask * region).sum(dim=dims) / mask.sum(dim=dims)
    area_share = region.sum(dim=dims).double() / math.prod(region.shape[1:])
    return mass_share / area_share


lane_mass_ratio = mass_ratio


def pointing_game(mask: ArrayLike, region: ArrayLike, tolerance: int = 2) -> Tensor:
    """1.0 if the mask's maximum lies within ``tolerance`` pixels of the region, else 0.0.

    Distance is Chebyshev distance: the region is dilated by a (2 tolerance + 1) square. If
    several pixels share the maximum, the image scores a hit if any of them hits (so a constant
    mask hits whenever the region is not empty). NaN for images whose region is empty.
    """
    if tolerance < 0:
        raise ValueError(f'tolerance must be non-negative, got {tolerance}')
    mask, region = _mask_and_region(mask, region)
    near = F.max_pool2d(region.float(), 2 * tolerance + 1, stride=1, padding=tolerance) > 0
    at_max = mask == mask.amax(dim=(1, 2, 3), keepdim=True)
    hit = (at_max & near).flatten(1).any(dim=1).double()
    return hit.masked_fill(~region.flatten(1).any(dim=1), math.nan)


def random_mask_like(mask: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
    """Uniform random float32 values in [0, 1) of the mask's shape, on its device.

    ``generator`` is a CPU generator (for reproducible orderings); the values are drawn on the CPU.
    """
    mask = torch.as_tensor(mask)
    return torch.rand(mask.shape, generator=generator).to(mask.device)


@dataclass(frozen=True)
class PerturbationCurves:
    """Region perturbation of a batch; tensors are float64 on the input's device.

    ``fractions`` (steps + 1,) holds the share of pixels perturbed at step k, floor(k N / steps)
    / N for N = H W, from 0 to 1. ``deletion_outputs`` and ``insertion_outputs`` (B, steps + 1)
    hold the model outputs f(x_k): for deletion x_k is x with its top-k pixels replaced by the
    baseline (x_0 = x), for insertion the baseline with the top-k pixels of x inserted (the last
    image is x itself).
    """

    fractions: Tensor
    deletion_outputs: Tensor
    insertion_outputs: Tensor

    @property
    def output(self) -> Tensor:
        """f(x), shape (B,): the k = 0 deletion output (the last insertion output is f(x) too,
        from another batch, so it may differ by rounding in float32 networks)."""
        return self.deletion_outputs[:, 0]

    @property
    def baseline_output(self) -> Tensor:
        """f(baseline), shape (B,)."""
        return self.insertion_outputs[:, 0]

    @property
    def deletion_curve(self) -> Tensor:
        """|f(x_k) - f(x)| per deletion step (B, steps + 1): rises fast for a good mask."""
        return (self.deletion_outputs - self.output[:, None]).abs()

    @property
    def insertion_curve(self) -> Tensor:
        """|f(x_k) - f(x)| per insertion step (B, steps + 1): falls fast for a good mask."""
        return (self.insertion_outputs - self.output[:, None]).abs()

    @property
    def deletion_aopc(self) -> Tensor:
        """Mean of the deletion curve over the steps + 1 points k = 0..steps (Samek's AOPC).

        AOPC = 1 / (steps + 1) * sum_k |f(x_k) - f(x)|; the k = 0 term is 0. Higher is better.
        """
        return self.deletion_curve.mean(dim=1)

    @property
    def insertion_aopc(self) -> Tensor:
        """Mean over k = 0..steps of |f(baseline) - f(x)| - |f(x_k) - f(x)|. Higher is better.

        The k = 0 term is 0 and the k = steps term is |f(baseline) - f(x)|.
        """
        start = (self.baseline_output - self.output).abs()
        return (start[:, None] - self.insertion_curve).mean(dim=1)


def deletion_insertion(model: nn.Module, x: Tensor, mask: ArrayLike, steps: int = 20,
                       baseline: Tensor | float | None = None,
                       batch_size: int = 64) -> PerturbationCurves:
    """Deletion and insertion curves of ``x`` (B, C, H, W) with pixels ranked by ``mask``.

    Pixels are ranked by decreasing mask value (ties in raster order) and perturbed in ``steps``
    equal fractions, all channels of a pixel at once. The baseline is a tensor broadcastable to
    x or a number; by default each image's per-channel mean (a flat image of its mean colour).
    Pass :func:`random_mask_like` as ``mask`` for the random-order reference.
    """
    if steps < 1:
        raise ValueError(f'steps must be positive, got {steps}')
    ranks = _pixel_ranks(x, mask)
    baseline = _baseline_like(x, baseline)
    pixels = ranks[0].numel()
    counts = torch.arange(steps + 1, device=x.device) * pixels // steps
    deleted = _perturbed_outputs(model, x, baseline, ranks, counts, batch_size)
    inserted = _perturbed_outputs(model, baseline, x, ranks, counts, batch_size)
    return PerturbationCurves(counts.double() / pixels, deleted, inserted)


def _pixel_ranks(x: Tensor, mask: ArrayLike) -> Tensor:
    """(B, 1, H, W) rank of each pixel by decreasing mask value, ties in raster order."""
    mask = torch.as_tensor(mask).detach().to(x.device)
    if x.dim() != 4 or mask.shape != (x.shape[0], 1, *x.shape[2:]):
        raise ValueError(f'expected x (B, C, H, W) and mask (B, 1, H, W), got '
                         f'{tuple(x.shape)} and {tuple(mask.shape)}')
    order = mask.flatten(1).sort(dim=1, descending=True, stable=True).indices
    positions = torch.arange(order.shape[1], device=x.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions).view(mask.shape)


def _baseline_like(x: Tensor, baseline: Tensor | float | None) -> Tensor:
    """The baseline image for every image of x; by default its per-channel mean."""
    if baseline is None:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    return torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)


def _perturbed_outputs(model: nn.Module, old: Tensor, new: Tensor, ranks: Tensor,
                       counts: Tensor, batch_size: int) -> Tensor:
    """(B, steps + 1) outputs for ``old`` with its top-counts[k] pixels taken from ``new``."""
    images = old.shape[0]
    total = counts.numel() * images

    def perturbed(index: Tensor) -> Tensor:
        step, image = index // images, index % images
        replaced = ranks[image] < counts[step].view(-1, 1, 1, 1)
        return torch.where(replaced, new[image], old[image])

    outputs = _predict_chunks(model, perturbed, total, batch_size, old.device)
    return outputs.view(counts.numel(), images).T


def _predict_chunks(model: nn.Module, make_images: Callable[[Tensor], Tensor], total: int,
                    batch_size: int, device: torch.device) -> Tensor:
    """Model outputs (total,) float64 for images ``make_images(indices)``, in chunks."""
    if batch_size < 1:
        raise ValueError(f'batch_size must be positive, got {batch_size}')
    chunks = torch.arange(total, device=device).split(batch_size)
    return torch.cat([_predict(model, make_images(chunk)) for chunk in chunks])


@torch.inference_mode()
def _predict(model: nn.Module, images: Tensor) -> Tensor:
    """One output per image, (N,) float64."""
    output = model(images).reshape(images.shape[0], -1)
    if output.shape[1] != 1:
        raise ValueError(f'expected one model output per image, got {output.shape[1]}')
    return output[:, 0].double()


@dataclass(frozen=True)
class ShiftTestResult:
    """The two shifted images of the shift test and the model outputs; outputs are float64 (B,).

    ``region`` (B, 1, H, W) is the salient region, ``salient_shifted`` (a) and
    ``background_shifted`` (b) the (B, C, H, W) test images.
    """

    region: Tensor
    salient_shifted: Tensor
    background_shifted: Tensor
    output: Tensor
    salient_shifted_output: Tensor
    background_shifted_output: Tensor

    @property
    def salient_shift_change(self) -> Tensor:
        """|f(a) - f(x)|: large for a good mask."""
        return (self.salient_shifted_output - self.output).abs()

    @property
    def background_shift_change(self) -> Tensor:
        """|f(b) - f(x)|: small for a good mask."""
        return (self.background_shifted_output - self.output).abs()

    @property
    def ratio(self) -> Tensor:
        """|f(a) - f(x)| / |f(b) - f(x)|: inf where only (b) leaves the output unchanged, NaN
        where both do."""
        return self.salient_shift_change / self.background_shift_change


def shift_test(model: nn.Module, x: Tensor, mask: ArrayLike, shift: int = 20,
               fraction: float = 0.1, baseline: Tensor | float | None = None,
               batch_size: int = 64) -> ShiftTestResult:
    """Shift the salient region, or everything else, ``shift`` pixels to the right (Bojarski).

    The salient region holds the ceil(fraction H W) pixels of largest mask value (ties in raster
    order). Image (a) pastes the shifted salient region onto x whose salient pixels were replaced
    by the baseline; image (b) pastes the unshifted salient region onto the shifted image of x
    with its salient pixels replaced by the baseline. So each image shows every salient pixel once
    and every other pixel once (as far as the image reaches). The baseline is as in
    :func:`deletion_insertion` (by default each image's per-channel mean). Images shift with edge
    replication (columns entering at the edge repeat the edge column of x or of x without its
    salient region); the salient region enters nothing at the edge, and what leaves the image is
    dropped. A negative ``shift`` moves to the left.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f'fraction must be in (0, 1], got {fraction}')
    ranks = _pixel_ranks(x, mask)
    region = ranks < max(1, math.ceil(fraction * ranks[0].numel()))
    background = torch.where(region, _baseline_like(x, baseline), x)
    salient_shifted = torch.where(_shift_region(region, shift), _shift_image(x, shift),
                                  background)
    background_shifted = torch.where(region, x, _shift_image(background, shift))
    images = torch.cat((x, salient_shifted, background_shifted))
    outputs = _predict_chunks(model, images.__getitem__, len(images), batch_size, x.device)
    return ShiftTestResult(region, salient_shifted, background_shifted, *outputs.view(3, -1))


def _source_columns(width: int, shift: int, device: torch.device) -> Tensor:
    """For each column after shifting right by ``shift``, the column it comes from."""
    return torch.arange(width, device=device) - shift


def _shift_image(images: Tensor, shift: int) -> Tensor:
    """Shift right by ``shift`` columns, repeating the edge column where columns enter."""
    width = images.shape[-1]
    return images.index_select(-1, _source_columns(width, shift, images.device)
                               .clamp(0, width - 1))


def _shift_region(region: Tensor, shift: int) -> Tensor:
    """Shift right by ``shift`` columns; entering columns are empty."""
    width = region.shape[-1]
    source = _source_columns(width, shift, region.device)
    inside = (source >= 0) & (source < width)
    return region.index_select(-1, source.clamp(0, width - 1)) & inside
