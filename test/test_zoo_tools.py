"""The tools on the network zoo: vbp-train and vbp-eval on a zoo network, vbp-inspect on every
kind of model source, vbp-bench over the zoo."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from vbp_ros import load_checkpoint
from vbp_ros.models.cards import write_card
from vbp_ros.models.loading import load_model
from vbp_ros.models.networks import ZOO
from vbp_ros.explain.onnx_vbp import add_visualbackprop
from vbp_ros.data.sources import read_image
from vbp_ros.data.synthetic import SyntheticRoads
from vbp_ros.engine.onnx_backend import export_onnx
from vbp_ros.models.preprocess import Preprocessor
from vbp_ros.tools import bench, evaluate, inspect, train

SMALL = ['--train-frames', '32', '--val-frames', '8', '--batch-size', '16', '--quiet']


@pytest.fixture(scope='module')
def pilotnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('pilotnet')
    assert train.main(['--out', str(out), '--architecture', 'pilotnet_elu', '--epochs', '1',
                       *SMALL]) == 0
    return out / 'model.safetensors'


def test_train_writes_a_zoo_checkpoint_with_the_network_input(pilotnet_checkpoint: Path
                                                              ) -> None:
    model, spec = load_checkpoint(pilotnet_checkpoint)
    assert spec.architecture == 'pilotnet_elu' and spec.color == 'rgb'
    assert (spec.input_channels, spec.input_height, spec.input_width) == (3, 66, 200)
    assert spec.crop == (230, 0, 250, 640)


@pytest.mark.slow
def test_eval_on_a_zoo_network_compares_vbp_and_gradcam(pilotnet_checkpoint: Path,
                                                        tmp_path: Path, capsys) -> None:
    target = tmp_path / 'eval.json'
    assert evaluate.main(['--model', str(pilotnet_checkpoint), '--frames', '6', '--seed', '5',
                          '--json', str(target)]) == 0
    report = json.loads(target.read_text())
    assert report['shift_px'] == 6  # 20 px per 640 of width, on a 200-wide input
    for method in ('vbp', 'gradcam'):
        assert np.isfinite(report[method]['lane_mass_ratio'])
        assert 0 <= report[method]['pointing_game'] <= 1
    assert 'LRPEpsilon follows networks' in report['lrp']['refused']
    assert 'lrp: refused: ' in capsys.readouterr().out


def test_inspect_and_figure2_refuse_what_would_print_nothing(tmp_path: Path, capsys) -> None:
    from vbp_ros.tools import figure2
    with pytest.raises(SystemExit):
        inspect.main(['resnet18', '--repeats', '0'])  # was 3 timed calls, silently
    assert 'argument --repeats: 0 is not a positive integer' in capsys.readouterr().err
    assert figure2.main(['--model', str(tmp_path / 'any.safetensors'), str(tmp_path)]) == 1
    assert f'no images in {tmp_path}' in capsys.readouterr().err  # exit 0 before


def test_inspect_prints_the_plan_of_a_residual_network(capsys) -> None:
    assert inspect.main(['resnet18', '--repeats', '1']) == 0
    out = capsys.readouterr().out
    assert 'kept tensors (shallow to deep):' in out and '17. layer4.1.relu#2 (ReLU) 512x3x7' in out
    assert 'conv1: 33x100 -> 66x200 into input, kernel 7x7, stride 2x2, padding 3x3' in out
    assert 'maxpool <- layer1.0.conv1 (scaled up) + layer1.0.add' in out
    assert 'avgpool (AdaptiveAvgPool2d) reads layer4.1.relu#2' in out
    assert 'forward pass: ' in out and 'vbp: adds ' in out and 'gradcam: adds ' in out
    assert "lrp: refused: layer 'maxpool' (MaxPool2d)" in out


def test_inspect_renders_figure2_of_a_checkpoint(pilotnet_checkpoint: Path, reference_dir: Path,
                                                 tmp_path: Path, capsys) -> None:
    image = tmp_path / 'road.png'
    cv2.imwrite(str(image), SyntheticRoads(seed=3).frame(0).image)  # a 640x480 camera frame
    assert inspect.main([str(pilotnet_checkpoint), '--image', str(image), '--out',
                         str(tmp_path), '--repeats', '1']) == 0
    assert 'input 3x66x200' in capsys.readouterr().out
    figure = cv2.imread(str(tmp_path / 'road_figure2.png'))
    assert figure.shape == (7 * (66 + 18), 2 * 200, 3)  # input row, five layers, mask row
    other_camera = reference_dir / 'images' / 'img3.jpg'  # 640x125: not this model's camera
    assert inspect.main([str(pilotnet_checkpoint), '--image', str(other_camera)]) == 1
    assert 'frame 640x125 does not fit the model' in capsys.readouterr().err


@pytest.fixture(scope='module')
def pilotnet_onnx(pilotnet_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained PilotNet-ELU as a user brings it in ONNX: the exported graph and a card
    beside it."""
    model, spec = load_checkpoint(pilotnet_checkpoint)
    path = tmp_path_factory.mktemp('onnx') / 'pilotnet.onnx'
    onnx.save(export_onnx(model, (3, 66, 200)), str(path))
    write_card(path.with_suffix('.yaml'), replace(spec, architecture='', arguments={}))
    return path


def test_inspect_shows_the_plan_and_figure2_of_an_onnx_file(pilotnet_onnx: Path, tmp_path: Path,
                                                            capsys) -> None:
    image = tmp_path / 'road.png'
    cv2.imwrite(str(image), SyntheticRoads(seed=3).frame(0).image)
    assert inspect.main([str(pilotnet_onnx), '--image', str(image), '--out', str(tmp_path),
                         '--repeats', '1']) == 0
    out = capsys.readouterr().out
    assert 'input 3x66x200 (image)' in out and out.count(', positive part') == 5
    assert '1. /Elu_output_0 (Elu, layer /conv1/Conv) 24x31x98' in out
    assert '/conv1/Conv: 31x98 -> 66x200 into ' in out and 'kernel 5x5, stride 2x2' in out
    assert '/Flatten (Flatten) reads /Elu_4_output_0' in out
    assert 'forward pass: ' in out and 'vbp: adds ' in out
    figure = cv2.imread(str(tmp_path / 'road_figure2.png'))
    assert figure.shape == (7 * (66 + 18), 2 * 200, 3)  # input row, five layers, mask row
    assert figure[-66:, :200].max() > 0  # the final mask is drawn


def test_inspect_of_an_exported_graph_shows_its_plan_and_mask(pilotnet_onnx: Path,
                                                              tmp_path: Path, capsys) -> None:
    """vbp-export's graphs carry the mask already: no layers to draw, no cost to measure."""
    exported = tmp_path / 'exported.onnx'
    onnx.save(add_visualbackprop(onnx.load(str(pilotnet_onnx))), str(exported))
    exported.with_suffix('.yaml').write_text(pilotnet_onnx.with_suffix('.yaml').read_text())
    image = tmp_path / 'road.png'
    cv2.imwrite(str(image), SyntheticRoads(seed=3).frame(0).image)
    assert inspect.main([str(exported), '--image', str(image), '--out', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '1. /Elu_output_0 (Elu, layer /conv1/Conv) 24x31x98' in out
    assert 'not measured: the graph carries its mask already' in out
    assert cv2.imread(str(tmp_path / 'road_figure2.png')).shape == (2 * (66 + 18), 400, 3)


def test_inspect_makes_the_image_into_the_input_as_the_card_says(
        pilotnet_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Figure 2's input is the frame as vbp_node feeds it: the card's crop, its resize
    (input.interpolation, here overridden with --set), colour and scaling."""
    image = tmp_path / 'road.png'
    cv2.imwrite(str(image), SyntheticRoads(seed=3).frame(0).image)
    drawn = []
    monkeypatch.setattr(inspect, 'render_figure2',
                        lambda x, *pictures: drawn.append(x) or np.zeros((1, 1, 3), np.uint8))
    interpolations = ('area', 'nearest')
    for interpolation in interpolations:
        assert inspect.main([str(pilotnet_onnx), '--image', str(image), '--out', str(tmp_path),
                             '--set', f'input.interpolation={interpolation}',
                             '--repeats', '1']) == 0
    _, spec = load_model(pilotnet_onnx)
    for x, interpolation in zip(drawn, interpolations):
        expected = Preprocessor(replace(spec, interpolation=interpolation))(read_image(image))
        np.testing.assert_array_equal(x, expected)
    assert not np.array_equal(*drawn)


def test_inspect_asks_for_the_card_of_an_onnx_file(pilotnet_onnx: Path, tmp_path: Path,
                                                   capsys) -> None:
    bare = tmp_path / 'bare.onnx'
    bare.write_bytes(pilotnet_onnx.read_bytes())
    assert inspect.main([str(bare)]) == 1
    assert ('an ONNX model needs a model card: bare.yaml beside it, or one named by --card '
            "(vbp_node: the 'model_card' parameter)") in capsys.readouterr().err
    # vbp-eval takes PyTorch networks only: it says so first, card or not
    assert evaluate.main(['--model', str(bare), '--frames', '8']) == 1
    assert 'an ONNX model; this needs a PyTorch network' in capsys.readouterr().err


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / 'user_nets.py').write_text(textwrap.dedent('''
        import torch
        from torch import nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 4, 3)
                self.fc = nn.Linear(4, 1)

            def forward(self, x):
                return self.fc(F.silu(self.conv(x)).mean((2, 3)))

        class Branchy(Net):
            def forward(self, x):
                y = self.conv(x)
                if y.sum() > 0:
                    y = -y
                return self.fc(y.mean((2, 3)))

        def net():
            return Net()

        def branchy():
            return Branchy()
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return 'user_nets'


def test_inspect_loads_a_python_factory(user_module: str, capsys) -> None:
    with pytest.raises(SystemExit):
        inspect.main([f'{user_module}:net'])  # no input size known
    assert 'give --input CxHxW' in capsys.readouterr().err
    assert inspect.main([f'{user_module}:net', '--input', '1x20x30', '--repeats', '1']) == 0
    assert '1. silu (F.silu, layer conv) 4x18x28, positive part' in capsys.readouterr().out


def test_inspect_names_the_node_it_refuses(user_module: str, capsys) -> None:
    assert inspect.main([f'{user_module}:branchy', '--input', '1x20x30']) == 2
    error = capsys.readouterr().err
    assert 'refused: torch.fx cannot read the network at user_nets.py:' in error
    assert '`if y.sum() > 0:`' in error


def test_inspect_reports_unknown_models(capsys) -> None:
    assert inspect.main(['no_such_network']) == 1
    assert 'not a model file, a registered architecture' in capsys.readouterr().err


@pytest.mark.slow
def test_bench_covers_the_zoo(tmp_path: Path, capsys) -> None:
    target = tmp_path / 'bench.json'
    assert bench.main(['--networks', 'zoo', '--batches', '1', '--repeats', '3', '--warmup', '1',
                       '--methods', 'forward,vbp,vbp_mask', '--engine-frames', '0', '--json',
                       str(target)]) == 0
    records = json.loads(target.read_text())
    assert {(r['network'], r['method']) for r in records} == {
        (n, m) for n in ZOO for m in ('forward', 'vbp', 'vbp_mask')}
    assert all(r['median_ms'] > 0 for r in records)
    vbp_rows = [line for line in capsys.readouterr().out.splitlines() if ' vbp ' in line]
    assert len(vbp_rows) == len(ZOO) and all('%' in row for row in vbp_rows)


def test_agreement_without_images_says_so(pilotnet_checkpoint: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    """An empty folder ended in numpy's 'need at least one array to stack' traceback."""
    from vbp_ros.tools import agreement

    assert agreement.main([str(tmp_path), '--model', str(pilotnet_checkpoint)]) == 1
    assert capsys.readouterr().err == f'vbp-agreement: no images in {tmp_path}\n'
