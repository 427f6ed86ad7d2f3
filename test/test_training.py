"""vbp-train and vbp-eval on small synthetic runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vbp_ros import load_checkpoint
from vbp_ros.tools import evaluate, train
from vbp_ros.data.datasets import synthetic_set, synthetic_spec
from vbp_ros.data.synthetic import SyntheticRoads
from vbp_ros.models.preprocess import Preprocessor

SMALL = ['--train-frames', '48', '--val-frames', '16', '--batch-size', '16', '--quiet']


@pytest.fixture(scope='module')
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('train')
    assert train.main(['--out', str(out), '--epochs', '3', *SMALL]) == 0
    return out


@pytest.mark.slow
def test_training_lowers_the_loss_and_writes_checkpoints(short_run: Path) -> None:
    record = json.loads((short_run / 'history.json').read_text())
    losses = [epoch['train_loss'] for epoch in record['history']]
    assert len(losses) == 3 and losses[-1] < losses[0]
    model, spec = load_checkpoint(short_run / 'best.safetensors')
    assert spec.output_unit == 'rad' and spec.crop == (230, 0, 250, 640)
    assert 'vbp-train --out' in spec.description and '--epochs 3' in spec.description


@pytest.mark.slow
def test_checkpoint_outputs_radians(short_run: Path) -> None:
    """The target scale is folded into the last layer: the checkpoint's RMSE in radians is the
    one vbp-train reported."""
    model, spec = load_checkpoint(short_run / 'model.safetensors')
    record = json.loads((short_run / 'history.json').read_text())
    validation = synthetic_set(1, 0, 16, spec)
    with torch.inference_mode():
        predicted = model(validation.inputs(slice(None), spec)).squeeze(1)
    rmse = float((predicted - torch.from_numpy(validation.angles)).square().mean().sqrt())
    assert rmse == pytest.approx(record['history'][-1]['val_rmse_rad'], rel=1e-4)


@pytest.mark.slow
def test_figure5_masks_at_fractional_epochs(short_run: Path) -> None:
    saved = sorted(p.name for p in (short_run / 'figure5').glob('*.png'))
    assert saved == ['fraction_0.1.png', 'fraction_0.5.png', 'fraction_1.png']
    assert (short_run / 'figure5_strip.png').stat().st_size > 0


@pytest.mark.slow
def test_resume_continues_the_same_run(short_run: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3-epoch run interrupted (Ctrl-C) in its last epoch and resumed ends where the
    uninterrupted run ended: same schedule, same frame order, same weights."""
    out = tmp_path / 'resumed'
    run_epoch = train.run_epoch

    def interrupted(*args: object, **kwargs: object) -> float:
        if args[5] == 2:  # the third epoch
            raise KeyboardInterrupt
        return run_epoch(*args, **kwargs)

    monkeypatch.setattr(train, 'run_epoch', interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.main(['--out', str(out), '--epochs', '3', *SMALL])
    monkeypatch.setattr(train, 'run_epoch', run_epoch)
    assert train.main(['--out', str(out), '--epochs', '3', '--resume', *SMALL]) == 0
    resumed = json.loads((out / 'history.json').read_text())['history']
    straight = json.loads((short_run / 'history.json').read_text())['history']
    assert [e['epoch'] for e in resumed] == [1, 2, 3]
    for resumed_epoch, straight_epoch in zip(resumed, straight):
        assert resumed_epoch['train_loss'] == pytest.approx(straight_epoch['train_loss'],
                                                            rel=1e-4)
        assert resumed_epoch['val_rmse_rad'] == pytest.approx(straight_epoch['val_rmse_rad'],
                                                              rel=1e-4)


@pytest.mark.slow
def test_resume_refuses_another_network_and_says_when_there_is_nothing_to_resume(
        short_run: Path, tmp_path: Path, capsys) -> None:
    before = (short_run / 'model.safetensors').read_bytes()
    assert train.main(['--out', str(short_run), '--resume', '--architecture', 'netsvf',
                       *SMALL]) == 1  # a traceback from load_state_dict before
    assert (f'vbp-train: {short_run} holds a run with --architecture authors, not netsvf'
            in capsys.readouterr().err)
    assert (short_run / 'model.safetensors').read_bytes() == before
    fresh = tmp_path / 'fresh'
    assert train.main(['--out', str(fresh), '--resume', '--epochs', '1', *SMALL]) == 0
    assert f'nothing to resume in {fresh} (no state.safetensors): a new run' in \
        capsys.readouterr().err
    assert len(json.loads((fresh / 'history.json').read_text())['history']) == 1


@pytest.mark.slow
def test_eval_reports_every_method(short_run: Path, tmp_path: Path) -> None:
    target = tmp_path / 'eval.json'
    assert evaluate.main(['--model', str(short_run / 'model.safetensors'), '--frames', '8',
                          '--seed', '5', '--json', str(target)]) == 0
    report = json.loads(target.read_text())
    assert set(report) >= {'vbp', 'lrp', 'gradcam', 'rmse_rad', 'angle_std_rad'}
    for method in ('vbp', 'lrp', 'gradcam'):
        values = report[method]
        assert {'lane_mass_ratio', 'pointing_game', 'aopc'} <= set(values)
        assert np.isfinite(values['lane_mass_ratio']) and 0 <= values['pointing_game'] <= 1


def test_synthetic_regions_follow_the_network_crop() -> None:
    data = synthetic_set(3, 0, 4, synthetic_spec(), regions=True)
    assert data.pixels.shape == (4, 1, 125, 640) and data.lanes.shape == (4, 1, 125, 640)
    marking = data.pixels[data.lanes].astype(float).mean()
    road = data.pixels[~data.lanes & ~data.distractors].astype(float).mean()
    assert marking > road + 40


def test_training_and_evaluation_inputs_are_the_engines_for_a_normalized_card() -> None:
    """vbp-train's and vbp-eval's inputs are scaled as vbp_node scales a camera frame, with
    the card's mean and std (an ImageNet-normalized card): they used to apply the pixel scale
    only, so vbp-eval judged such a network on inputs the car never feeds it."""
    spec = replace(synthetic_spec('pilotnet'), mean=(0.485, 0.456, 0.406),
                   std=(0.229, 0.224, 0.225))
    data = synthetic_set(5, 0, 3, spec)
    engine_inputs = [Preprocessor(spec)(frame.image)
                     for frame in SyntheticRoads(seed=5).frames(0, 3)]
    np.testing.assert_allclose(data.inputs(slice(None), spec).numpy(), engine_inputs, atol=1e-6)
    np.testing.assert_allclose(data.inputs(np.array([2, 0]), spec).numpy(),
                               [engine_inputs[2], engine_inputs[0]], atol=1e-6)


@pytest.mark.parametrize('option', [['--lr', 'nan'], ['--lr', '-1'], ['--epochs', '0'],
                                    ['--batch-size', '0'], ['--val-frames', '0']])
def test_settings_that_cannot_train_are_refused(option: list[str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """--lr nan trained and saved an all-NaN model with exit code 0; --batch-size 0 died in
    a ZeroDivisionError."""
    with pytest.raises(SystemExit) as stop:
        train.main(['--out', str(tmp_path / 'run'), *option, *SMALL])
    assert stop.value.code == 2 and option[0] in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()


def test_a_diverged_run_stops_with_the_reason_and_keeps_the_epoch_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    run_epoch = train.run_epoch

    def diverging(*args: object, **kwargs: object) -> float:
        loss = run_epoch(*args, **kwargs)
        return float('nan') if args[5] == 1 else loss  # the second epoch

    monkeypatch.setattr(train, 'run_epoch', diverging)
    out = tmp_path / 'run'
    assert train.main(['--out', str(out), '--epochs', '3', *SMALL]) == 1
    assert 'the training diverged in epoch 2' in capsys.readouterr().err
    assert [e['epoch'] for e in json.loads((out / 'history.json').read_text())['history']] == [1]
    model, _ = load_checkpoint(out / 'model.safetensors')
    assert all(torch.isfinite(p).all() for p in model.parameters())
