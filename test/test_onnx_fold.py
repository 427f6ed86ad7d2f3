"""Batch normalizations folded into the convolution that reads them before onnxruntime runs a
graph (vbp_ros/engine/onnx_fold.py): the same outputs and mask, and no fold where the result
would differ."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from vbp_ros.engine import onnx_backend
from vbp_ros.engine.onnx_backend import OnnxRuntimeNetwork, export_onnx, with_visualbackprop
from vbp_ros.engine.onnx_fold import fold_normalizations
from vbp_ros.models.checkpoint import ModelSpec
from vbp_ros.models.networks import authors_net


def with_statistics(network: nn.Module, seed: int = 0) -> nn.Module:
    """``network`` in eval mode, its normalizations given statistics and affine parameters far
    from the identity, so that a wrong fold shows."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.rand(channels, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(channels, generator=generator) * 2 + 0.25)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(channels, generator=generator) - 0.5)
    return network.eval()


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: x})


def operators(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.mark.parametrize('statistics', ['trained', 'initial'])
def test_the_authors_model_and_its_mask_are_unchanged_by_the_fold(statistics: str) -> None:
    """The authors' model normalizes before each of its ten convolutions (folded) and after
    the last activation (read by Flatten: kept); outputs and mask equal within rounding. With
    its initial statistics torch's exporter shares the equal tensors through Identity nodes,
    which the fold reads through (and removes with them)."""
    network = with_statistics(authors_net()) if statistics == 'trained' else \
        authors_net().eval()
    graph = with_visualbackprop(export_onnx(network, (1, 125, 640)), ModelSpec('', 1, 125, 640))
    folded = fold_normalizations(graph)
    onnx.checker.check_model(folded, full_check=True)
    assert operators(graph).count('BatchNormalization') == 11
    assert operators(folded).count('BatchNormalization') == 1
    assert len(folded.graph.initializer) < len(graph.graph.initializer)  # replaced ones went
    read = {name for node in folded.graph.node for name in node.input}
    assert all(node.output[0] in read for node in folded.graph.node
               if node.op_type in ('Identity', 'Constant'))  # none left dangling
    x = np.random.default_rng(0).random((2, 1, 125, 640), np.float32)
    for before, after in zip(run(graph, x), run(folded, x), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6 * np.abs(before).max())
    assert operators(graph).count('BatchNormalization') == 11  # the caller's graph untouched


@pytest.mark.parametrize('case', ['padded', 'grouped', 'read twice'])
def test_a_normalization_the_fold_would_change_stays(case: str) -> None:
    """A padded convolution sees zeros around the normalized tensor, which a folded bias
    cannot give; a grouped one and a second reader are left alone too."""
    convolution = nn.Conv2d(4, 4, 3, padding=1 if case == 'padded' else 0,
                            groups=2 if case == 'grouped' else 1)

    class Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.conv = nn.BatchNorm2d(4), convolution

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            normalized = self.norm(x)
            out = self.conv(normalized).mean((2, 3))
            return out + normalized.mean((2, 3)) if case == 'read twice' else out

    graph = export_onnx(with_statistics(Network()), (4, 16, 16))
    assert 'BatchNormalization' in operators(graph)
    assert fold_normalizations(graph) is graph


def test_the_engine_runs_the_folded_graph(monkeypatch) -> None:
    """OnnxRuntimeNetwork folds, with and without the mask, and its outputs are the unfolded
    graph's (and the network's in torch)."""
    network = with_statistics(authors_net(), seed=1)
    graph = export_onnx(network, (1, 125, 640))
    spec = ModelSpec('', 1, 125, 640)
    x = np.random.default_rng(1).random((1, 1, 125, 640), np.float32)
    (angle,) = run(graph, x)
    folded = []
    monkeypatch.setattr(onnx_backend, 'fold_normalizations',
                        lambda model: folded.append(fold_normalizations(model)) or folded[-1])
    outputs, mask = OnnxRuntimeNetwork(graph, spec, device='cpu', threads=1)(x)
    plain, no_mask = OnnxRuntimeNetwork(graph, spec, device='cpu', threads=1,
                                        with_mask=False)(x)
    assert [operators(model).count('BatchNormalization') for model in folded] == [1, 1]
    np.testing.assert_allclose(outputs, angle.reshape(1, -1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(plain, angle.reshape(1, -1), rtol=1e-5, atol=1e-7)
    assert mask.shape == (1, 125, 640) and no_mask is None
    with torch.inference_mode():
        np.testing.assert_allclose(network(torch.from_numpy(x)).numpy(), angle,
                                   rtol=1e-4, atol=1e-6)
