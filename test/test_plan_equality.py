"""One mask graph for PyTorch and ONNX: every registered network and its ``torch.onnx`` export
read into the same plan (kept tensors with their shapes, each scale-up with its geometry, the
rescaling points; names aside), and the same mask, PyTorch VisualBackProp against the mask
onnxruntime computes inside the exported graph."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from vbp_ros.engine.onnx_backend import export_onnx
from vbp_ros.explain.onnx_vbp import MASK_OUTPUT, add_visualbackprop, plan_visualbackprop
from vbp_ros.explain.vbp import VisualBackProp
from vbp_ros.models import networks

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('name', sorted(networks.ARCHITECTURES))
def test_torch_and_onnx_read_the_same_plan_and_mask(name: str) -> None:
    torch.manual_seed(sum(map(ord, name)))
    model = networks.build_network(name).eval()
    for module in model.modules():  # batch statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    shape = (model.in_channels, *model.input_size)
    x = torch.rand(2, *shape)
    graph = export_onnx(model, shape)
    with VisualBackProp(model) as vbp, torch.inference_mode():
        _, expected = vbp(x)
        torch_plan = vbp.graph
    onnx_plan = plan_visualbackprop(graph)
    assert onnx_plan.canonical() == torch_plan.canonical()
    assert len(onnx_plan.kept_tensors) > 1 and onnx_plan.scale_ups()
    session = ort.InferenceSession(add_visualbackprop(graph).SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    (mask,) = session.run([MASK_OUTPUT], {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(mask, expected.numpy(), atol=1e-4)
