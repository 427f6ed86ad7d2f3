"""The paper authors' released model, imported from Torch7, on their 22 demo images.

Mask criterion: lane markings are thin structures brighter than the asphalt around them, so they
are the strongest responses of a white top-hat filter (image minus its morphological opening with
a 31x31 square, wider than any marking in these 125x640 crops). Plain brightness does not work:
in the shadowed frames sunlit asphalt is the brightest area. For each image the ratio is the
mask's share of mass on the top 3% top-hat pixels divided by their 3% share of the area (1 means
no preference). Measured: median 17 for the trained model (19 of 22 images above 1), about 1 for
randomly initialised networks of the same architecture.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vbp_ros import VisualBackProp, authors_net, load_checkpoint
from vbp_ros.models.torch7 import load_torch7_model
from vbp_ros.render.figure2 import LABEL_HEIGHT
from vbp_ros.tools import figure2


def lane_marking_pixels(image: np.ndarray) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (31, 31))
    tophat = cv2.morphologyEx(image, cv2.MORPH_TOPHAT, kernel)
    return tophat >= np.quantile(tophat, 0.97)


def marking_mass_ratios(model: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    x = torch.from_numpy(np.stack(images)).float().div(255.0).unsqueeze(1)
    with VisualBackProp(model) as vbp, torch.inference_mode():
        _, masks = vbp(x)
    ratios = []
    for image, mask in zip(images, masks[:, 0].numpy()):
        lanes = lane_marking_pixels(image)
        ratios.append((mask[lanes].sum() / mask.sum()) / lanes.mean())
    return np.array(ratios)


@pytest.fixture(scope='module')
def authors_model(authors_checkpoint: Path) -> torch.nn.Module:
    model, spec = load_checkpoint(authors_checkpoint)
    assert spec.architecture == 'authors' and spec.output_unit == 'steering_wheel_rad'
    return model


def test_import_keeps_the_torch7_weights(reference_dir: Path, authors_model) -> None:
    direct = load_torch7_model(reference_dir / 'model.t7b')
    for (name, value), (_, loaded) in zip(direct.state_dict().items(),
                                          authors_model.state_dict().items()):
        torch.testing.assert_close(loaded, value, rtol=0, atol=0, msg=name)
    first_norm = authors_model.features[0]
    # cudnn layout: running_std = 1/sqrt(var + eps); converted back to a variance
    import torchfile
    source = torchfile.load(str(reference_dir / 'model.t7b'))[b'modules'][0][b'modules'][0]
    expected_var = 1.0 / source[b'running_std'] ** 2 - source[b'eps']
    np.testing.assert_allclose(first_norm.running_var.numpy(), expected_var, rtol=1e-5)


def test_angles_on_reference_images_are_finite_and_plausible(authors_model,
                                                             reference_images) -> None:
    x = torch.from_numpy(np.stack(reference_images)).float().div(255.0).unsqueeze(1)
    with torch.inference_mode():
        angles = authors_model(x).squeeze(1).numpy()
    assert np.isfinite(angles).all()
    assert np.abs(angles).max() < 0.5  # steering wheel radians on highway driving
    assert angles.std() > 1e-3  # the output depends on the image


@pytest.mark.slow
def test_masks_concentrate_on_lane_markings(authors_model, reference_images) -> None:
    trained = marking_mass_ratios(authors_model, reference_images)
    torch.manual_seed(0)
    untrained = marking_mass_ratios(authors_net().eval(), reference_images)
    assert np.median(trained) > 8.0
    assert (trained > 1.0).mean() >= 0.8
    assert np.median(trained) > 5.0 * np.median(untrained)


@pytest.mark.slow
def test_figure2_tool_renders_every_layer(authors_checkpoint: Path, reference_dir: Path,
                                          tmp_path: Path, capsys) -> None:
    images = [str(reference_dir / 'images' / name) for name in ('img1.jpg', 'img7.jpg')]
    assert figure2.main(['--model', str(authors_checkpoint), '--out', str(tmp_path)] + images) == 0
    figure = cv2.imread(str(tmp_path / 'img1_figure2.png'))
    tile = 125 + LABEL_HEIGHT
    assert figure.shape == (12 * tile, 2 * 640, 3)  # input row, ten layer rows, mask row
    overlay = figure[LABEL_HEIGHT:tile, 640:]
    assert (overlay[:, :, 2].astype(int) - overlay[:, :, 1]).max() > 100  # red where the mask is
    assert 'img7.jpg: output' in capsys.readouterr().out


def test_figure2_tool_reports_unreadable_images(authors_checkpoint: Path, tmp_path: Path,
                                                capsys) -> None:
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8 truncated')
    assert figure2.main(['--model', str(authors_checkpoint), '--out', str(tmp_path),
                         str(broken)]) == 1
    assert 'not a readable image' in capsys.readouterr().err


@pytest.mark.parametrize('content', ['garbage', 'truncated'])
def test_import_tool_refuses_a_broken_torch7_file(content: str, reference_dir: Path,
                                                  tmp_path: Path, capsys) -> None:
    from vbp_ros.tools import import_t7

    bogus = tmp_path / 'bogus.t7b'
    real = (reference_dir / 'model.t7b').read_bytes()
    bogus.write_bytes(b'not torch7 at all' if content == 'garbage' else real[:3000])
    assert import_t7.main([str(bogus), str(tmp_path / 'out.safetensors')]) == 1
    assert 'not a readable Torch7 file' in capsys.readouterr().err


@pytest.mark.slow
def test_vbp_and_lrp_masks_agree_on_the_reference_images(authors_model,
                                                         reference_images) -> None:
    """The paper calls the VBP and LRP-epsilon masks "very similar"; measured here: top-5%
    overlap median 0.73 against 0.13 for mismatched pairs, Pearson with |R| median 0.41."""
    from vbp_ros.tools.agreement import measure_agreement

    x = torch.from_numpy(np.stack(reference_images)).float().div(255.0).unsqueeze(1)
    result = measure_agreement(authors_model, x, [f'img{i}' for i in range(1, 23)])
    valid = ~result.degenerate
    assert valid.sum() >= 12
    assert np.median(result.top5_overlap[valid]) > 0.6
    assert np.median(result.top5_overlap[valid]) > 3 * result.baseline_top5_overlap
    assert np.median(result.pearson[valid]) > 0.25
