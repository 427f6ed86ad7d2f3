"""vbp-fleet --compare: the masks' similarity in camera coordinates on constructed masks, the
refusals of models that cannot be compared, reading for two models, a model compared with
itself through the worker, and the command on the mixed fleet against a perturbed copy of the
bundled model (another format, crop and angle unit): rows against both engines, the ranking
of the report's frames against comparison.parquet, the report in headless Chromium."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from chromium import open_in_chromium
from fleet_bags import FRAMES, MS, READ, T0, run_fleet, write_fleet
from vbp_ros.data.camera_bags import CameraFrame, write_camera_bag
from vbp_ros.data.fleet.reading import ReadOptions, read_segments
from vbp_ros.data.fleet.results import comparison_columns
from vbp_ros.data.sources import synthetic_frames
from vbp_ros.engine.build import build_engine
from vbp_ros.explain.attention import DEFAULT_ROI, AttentionStatistics
from vbp_ros.explain.mask_comparison import mask_similarity
from vbp_ros.fleet.comparison import TOP_FRAMES, Comparison, Disagreement, check_comparable
from vbp_ros.fleet.worker import SegmentWorker
from vbp_ros.models.cards import write_card
from vbp_ros.models.checkpoint import CheckpointError, ModelSpec, default_model_path
from vbp_ros.models.loading import load_model
from vbp_ros.pixels.frames import Crop

OTHER_CROP = (200, 0, 250, 640)  # the perturbed copy looks 30 rows higher than the bundled model


def blob(rows: np.ndarray, columns: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """A smooth bump in camera coordinates, sampled at pixel centres (rows x columns)."""
    return np.exp(-((rows[:, None] - centre[0]) ** 2 + (columns[None, :] - centre[1]) ** 2)
                  / (2 * 15.0 ** 2))


def mask_of(region: Crop, shape: tuple[int, int], centre: tuple[float, float]) -> np.ndarray:
    """A model's mask of ``shape`` over ``region``: the bump seen at its pixel centres."""
    rows = region.top + (np.arange(shape[0]) + 0.5) * region.height / shape[0]
    columns = region.left + (np.arange(shape[1]) + 0.5) * region.width / shape[1]
    return blob(rows, columns, centre)


# -- the similarity on constructed masks --------------------------------------------------------

def test_a_mask_compared_with_itself_is_similar_exactly() -> None:
    masks = np.random.default_rng(1).random((5, 12, 40), np.float32)
    regions = np.tile([10, 0, 30, 80], (5, 1))
    np.testing.assert_allclose(mask_similarity(masks, regions, masks, regions), 1.0, atol=1e-12)
    scaled = 3.0 * masks + 0.5  # Pearson: scale and offset do not matter
    np.testing.assert_allclose(mask_similarity(masks, regions, scaled, regions), 1.0, atol=1e-6)


def test_masks_of_different_crops_and_sizes_meet_in_camera_coordinates() -> None:
    near, wide = Crop(40, 0, 60, 200), Crop(0, 20, 100, 160)  # rows 40-99 / columns 20-179
    on_road = (70.0, 100.0)  # inside both crops
    same = mask_similarity(mask_of(near, (30, 100), on_road)[None], [near.as_tuple()],
                           mask_of(wide, (25, 40), on_road)[None], [wide.as_tuple()])
    assert same[0] > 0.97  # the same bump, seen through two crops at two resolutions
    elsewhere = mask_similarity(mask_of(near, (30, 100), on_road)[None], [near.as_tuple()],
                                mask_of(wide, (25, 40), (15.0, 100.0))[None], [wide.as_tuple()])
    assert elsewhere[0] < 0.1  # the other looks at the sky, which the first never saw
    shifted = mask_similarity(mask_of(near, (30, 100), on_road)[None], [near.as_tuple()],
                              mask_of(near, (30, 100), (70.0, 140.0))[None], [near.as_tuple()])
    assert elsewhere[0] < shifted[0] < same[0]


def test_frames_with_different_regions_are_compared_each_on_its_own_grid() -> None:
    near, wide = Crop(40, 0, 60, 200), Crop(0, 20, 100, 160)
    masks_a = np.stack([mask_of(near, (30, 100), (70.0, 100.0)),
                        mask_of(wide, (30, 100), (70.0, 100.0))])
    masks_b = np.stack([mask_of(wide, (25, 40), (70.0, 100.0)),
                        mask_of(near, (25, 40), (70.0, 100.0))])
    together = mask_similarity(masks_a, [near.as_tuple(), wide.as_tuple()], masks_b,
                               [wide.as_tuple(), near.as_tuple()])
    alone = [mask_similarity(masks_a[i:i + 1], [region_a], masks_b[i:i + 1], [region_b])[0]
             for i, (region_a, region_b) in enumerate([(near.as_tuple(), wide.as_tuple()),
                                                       (wide.as_tuple(), near.as_tuple())])]
    np.testing.assert_allclose(together, alone)
    assert (together > 0.97).all()


def test_a_blank_mask_has_no_similarity_and_the_angle_alone_decides() -> None:
    masks = np.random.default_rng(2).random((2, 6, 8))
    blank = masks.copy()
    blank[1] = 0.0
    regions = np.tile([0, 0, 6, 8], (2, 1))
    similarity = mask_similarity(masks, regions, blank, regions)
    assert similarity[0] == pytest.approx(1.0) and np.isnan(similarity[1])
    disagreement = Disagreement(angle_rad=0.1, similarity=0.6)
    scores = disagreement.scores(np.array([0.02, -0.3]), similarity)
    np.testing.assert_allclose(scores, [0.2, 3.0])
    shares = disagreement.shares(np.array([0.02, 0.3, 0.0]), np.array([0.5, 0.9, np.nan]))
    assert shares == {'angle': pytest.approx(1 / 3), 'mask': pytest.approx(1 / 3),
                      'either': pytest.approx(2 / 3)}


def test_comparison_parquet_columns_pair_each_statistic_with_the_others() -> None:
    names = ['bag', 'topic', 'stamp_ns', 'log_time_ns', 'index', 'angle', 'entropy',
             'change', 'recorded_angle', 'error', 'angle_other', 'angle_diff',
             'mask_similarity', 'disagreement', 'entropy_other', 'change_other']
    assert comparison_columns(names) == [
        'bag', 'topic', 'stamp_ns', 'log_time_ns', 'index', 'angle', 'angle_other',
        'angle_diff', 'mask_similarity', 'disagreement', 'entropy', 'change',
        'entropy_other', 'change_other']


# -- models that cannot be compared ---------------------------------------------------------------

SMALL = ModelSpec('authors', 1, 20, 64, crop=(8, 0, 32, 64), output_unit='rad')


def test_angles_in_other_units_are_compared_and_non_angles_refused() -> None:
    check_comparable(SMALL, replace(SMALL, output_unit='deg'), 'a.safetensors', 'b.pt')
    wheel = replace(SMALL, output_unit='steering_wheel_deg', steering_ratio=15.0)
    check_comparable(SMALL, wheel, 'a.safetensors', 'b.pt')  # the ratio makes it road wheel
    with pytest.raises(CheckpointError, match=r"^b.pt: output.unit 'class_logits' is not an "
                       'angle'):
        check_comparable(SMALL, replace(SMALL, output_unit='class_logits'), 'a.safetensors',
                         'b.pt')
    with pytest.raises(CheckpointError, match='^b.pt gives a steering wheel angle and the other '
                       'model a road wheel angle: set output.steering_ratio'):
        check_comparable(SMALL, replace(wheel, steering_ratio=0.0), 'a.safetensors', 'b.pt')


def test_a_card_for_another_camera_is_refused_in_one_line() -> None:
    camera = replace(SMALL, camera_size=(64, 48))
    check_comparable(camera, replace(SMALL, crop=(0, 0, 40, 64)), 'a.safetensors', 'b.pt')
    wide = replace(SMALL, crop=(0, 0, 30, 64), camera_size=(64, 30))
    with pytest.raises(CheckpointError) as refused:
        check_comparable(camera, wide, 'a.safetensors', 'b.pt')
    assert str(refused.value).startswith('b.pt does not fit the 64x48 camera of a.safetensors')
    assert '\n' not in str(refused.value)


# -- reading for two models ---------------------------------------------------------------------

def test_each_model_gets_its_own_input_of_the_same_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    sizes = [(48, 64), (48, 64), (44, 64), (48, 64)]  # the third fits only the first model
    frames = [CameraFrame(T0 + i * 50 * MS, T0 + i * 50 * MS + MS,
                          rng.integers(0, 255, size, np.uint8)) for i, size in enumerate(sizes)]
    bag = write_camera_bag(tmp_path / 'bag', frames)
    other = ModelSpec('authors', 1, 24, 32, crop=(0, 0, 48, 64))
    segments = list(read_segments(bag, SMALL, ReadOptions(segment_inputs=2, horizon_row=24.0),
                                  other))
    info = segments[-1].info
    assert (info.frames, info.skipped) == (3, {
        'compared model: frame 64x44 does not fit the model: its crop (0, 0, 48, 64) (top, '
        'left, height, width) is for a 64x48 camera; send frames of that aspect ratio (any '
        'resolution) or already cropped ones (64x48 or 32x24 aspect), or use a checkpoint made '
        'for this camera': 1})
    for segment in segments:
        compared = segment.compared
        np.testing.assert_array_equal(compared.index, segment.index)
        assert compared.planes.shape[1:] == (1, 24, 32) or not compared.frames
        assert segment.planes.shape[1:] == (1, 20, 64) or not segment.frames
        assert (segment.regions == [8, 0, 32, 64]).all()
        assert (compared.regions == [0, 0, 48, 64]).all()
        np.testing.assert_allclose(segment.horizon, (24 - 8) * 20 / 32)
        np.testing.assert_allclose(compared.horizon, 24 * 24 / 48)
    assert np.concatenate([s.index for s in segments]).tolist() == [0, 1, 3]
    assert segments[1].compared.context is not None  # the mask change of the other, too


# -- the worker against the engines ------------------------------------------------------------

def road_bag(folder: Path, count: int, seed: int = 4) -> Path:
    """A synthetic drive at 20 Hz (mono8 640x480), as the bundled model was trained on."""
    drive = synthetic_frames(seed=seed, drive_rate_hz=20.0)
    return write_camera_bag(folder / 'bag', [
        CameraFrame(T0 + i * 50 * MS, T0 + i * 50 * MS + 7 * MS, next(drive)[0])
        for i in range(count)])


@pytest.mark.slow
def test_a_model_compared_with_itself_agrees_on_every_frame(tmp_path: Path) -> None:
    bag = road_bag(tmp_path, 9)
    this = build_engine(None, device='cpu', max_batch=2)
    worker = SegmentWorker(this, 2, Comparison(
        build_engine(str(default_model_path()), device='cpu', max_batch=2), Disagreement()))
    results = [worker.process(s) for s in read_segments(
        bag, this.spec, ReadOptions(segment_inputs=4), this.spec)]
    columns = {name: np.concatenate([r.comparison.rows[name] for r in results])
               for name in results[0].comparison.rows}
    assert len(columns['angle_diff']) == 9
    assert (columns['mask_similarity'] >= 0.999).all()
    assert (np.abs(columns['angle_diff']) <= 1e-5).all()
    for name in ('centroid_x', 'entropy', 'upper_share', 'roi_mass', 'change'):
        own = np.concatenate([r.rows[name] for r in results])
        np.testing.assert_allclose(columns[name + '_other'], own, rtol=1e-6, equal_nan=True)
    candidates = [c for r in results for c in r.comparison.candidates]
    assert len(candidates) == 9 and all(c.jpeg[:2] == b'\xff\xd8' for c in candidates)


# -- the command on the mixed fleet -----------------------------------------------------------

def perturbed_copy(folder: Path) -> Path:
    """The bundled model with noisy weights, its output in degrees (the last layer scaled),
    looking 30 rows higher, saved as a torch.save state dict with its card."""
    network, spec = load_model(None)
    network = copy.deepcopy(network)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(1.0 + 0.1 * torch.randn(parameter.shape, generator=generator))
        last = [module for module in network.modules() if isinstance(module, nn.Linear)][-1]
        last.weight.mul_(180.0 / np.pi)
        last.bias.mul_(180.0 / np.pi)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / 'perturbed.pt'
    torch.save(network.state_dict(), path)
    write_card(path.with_suffix('.yaml'), replace(spec, crop=OTHER_CROP, output_unit='deg'))
    return path


@pytest.fixture(scope='module')
def compared_run(tmp_path_factory) -> tuple[Path, dict, Path, object]:
    root = tmp_path_factory.mktemp('fleet')
    expected = write_fleet(root)
    other = perturbed_copy(tmp_path_factory.mktemp('models'))
    out = tmp_path_factory.mktemp('out') / 'run'
    result = run_fleet(root, '--out', out, '--workers', 2, '--threads', 1, '--batch', 2,
                       '--segment', 4, '--compare', other)
    return out, expected, other, result


def camera_similarity(mask: np.ndarray, region: Crop, other: np.ndarray, other_region: Crop,
                      shape: tuple[int, int]) -> float:
    """Pearson correlation of two masks placed in the camera frame at its own resolution,
    over the pixels inside either crop: the definition, computed another way."""
    union = np.zeros(shape, bool)
    for crop in (region, other_region):
        union[crop.top:crop.top + crop.height, crop.left:crop.left + crop.width] = True
    first, second = region.place(mask, shape)[union], other_region.place(other, shape)[union]
    return float(np.corrcoef(first, second)[0, 1])


@pytest.mark.slow
def test_compared_rows_equal_both_engines_frame_by_frame(compared_run) -> None:
    out, expected, other, result = compared_run
    assert result.returncode == 1, result.stderr  # the corrupt bags fail, as without --compare
    frames = pq.read_table(out / 'frames.parquet').to_pylist()
    rows = pq.read_table(out / 'comparison.parquet').to_pylist()
    assert len(rows) == len(frames) == READ * FRAMES - 3
    assert [(r['bag'], r['index']) for r in rows] == [(r['bag'], r['index']) for r in frames]
    this, that = build_engine(None, device='cpu'), build_engine(other, device='cpu')
    region, other_region = (engine.preprocess.region((480, 640)) for engine in (this, that))
    assert other_region == Crop(*OTHER_CROP)
    previous = {}
    for frame_row, row in zip(frames, rows):
        frame, order = expected[row['bag']][row['index']]
        mine, theirs = this.process(frame, order=order), that.process(frame, order=order)
        assert row['angle'] == pytest.approx(mine.angle, rel=1e-5, abs=1e-7)
        assert row['angle_other'] == pytest.approx(theirs.angle, rel=1e-5, abs=1e-7)
        assert row['angle_diff'] == pytest.approx(theirs.angle - mine.angle, rel=1e-4, abs=1e-6)
        assert abs(row['angle_diff']) < 0.3  # degrees were converted: not 57 times the angle
        assert row['mask_similarity'] == pytest.approx(camera_similarity(
            mine.mask, region, theirs.mask, other_region, frame.shape[:2]), abs=0.02)
        statistics = AttentionStatistics(theirs.mask.shape, other_region, frame.shape[:2],
                                         DEFAULT_ROI)
        before = previous.get(row['bag'])
        table = statistics.table(theirs.mask[None], previous=before)
        for name, values in table.items():
            if name != 'above_horizon':  # no horizon given here
                assert row[name + '_other'] == pytest.approx(values[0], rel=1e-3, abs=1e-6,
                                                             nan_ok=True), name
            assert row[name] == frame_row[name] or np.isnan(row[name]), name
        previous[row['bag']] = theirs.mask
    similarity = np.array([r['mask_similarity'] for r in rows])
    assert 0.2 < similarity.min() < similarity.max() <= 1.0  # some frames differ more


@pytest.mark.slow
def test_the_reports_top_frames_are_the_most_different_and_load_in_chromium(
        compared_run, tmp_path: Path) -> None:
    out, _, other, _ = compared_run
    table = pq.read_table(out / 'comparison.parquet').to_pydict()
    order = np.argsort(-np.array(table['disagreement']), kind='stable')
    top = [(table['bag'][i], table['index'][i]) for i in order[:TOP_FRAMES]]
    summary = json.loads((out / 'summary.json').read_text())
    figures = summary['compared']['figures']
    assert [(item['bag'], item['index']) for item in figures['top']] == top
    scores = np.sort(table['disagreement'])[::-1]
    assert scores[0] > scores[TOP_FRAMES - 1] >= scores[TOP_FRAMES]
    assert summary['compared']['path'] == str(other.resolve())
    assert 'comparison.parquet' in summary['files']
    disagree = np.mean(np.array(table['disagreement']) > 1.0)
    assert figures['shares']['either'] == pytest.approx(disagree)

    errors, shown = open_in_chromium(out / 'report.html', tmp_path / 'profile')
    assert errors == []
    assert shown['loaded'] == shown['images']
    assert shown['pairs'] == TOP_FRAMES and len(shown['pair_images']) == 2 * TOP_FRAMES
    for (bag, index), (image, image_other) in zip(top, zip(shown['pair_images'][::2],
                                                           shown['pair_images'][1::2])):
        assert image.endswith(f'/compare-{index}.jpg')
        assert image_other.endswith(f'/compare-{index}-other.jpg')
        assert Path(bag).name.replace('.', '_') in image.replace('.', '_')
    assert shown['plots'] == 2 * READ + 1  # per bag: angles, timeline; the distributions
    assert 'frames of largest disagreement' in shown['text']
    assert 'disagree on either' in shown['text']


@pytest.mark.slow
def test_models_that_cannot_be_compared_are_refused_before_ray_starts(tmp_path: Path) -> None:
    network, spec = load_model(None)
    misfit = tmp_path / 'misfit.pt'
    torch.save(network.state_dict(), misfit)
    write_card(misfit.with_suffix('.yaml'), replace(spec, camera_size=(640, 360),
                                                    crop=(100, 0, 200, 640)))
    bag = road_bag(tmp_path, 2)
    result = run_fleet(bag, '--out', tmp_path / 'out', '--compare', misfit, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f'vbp-fleet: error: {misfit} does not fit the 640x480 '
                                    'camera of the bundled model: frame 640x480 does not fit')
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_a_comparison_without_a_bag_read_still_reports(tmp_path: Path) -> None:
    (tmp_path / 'broken.mcap').write_bytes(b'\x89MCAP0\r\n' + bytes(range(256)) * 8)
    out = tmp_path / 'out'
    result = run_fleet(tmp_path / 'broken.mcap', '--out', out, '--compare',
                       default_model_path(), timeout=120)
    assert result.returncode == 1, result.stderr
    assert pq.read_table(out / 'comparison.parquet').num_rows == 0
    assert 'frames compared' in (out / 'report.html').read_text()
