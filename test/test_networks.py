"""The paper's networks have the layer sizes of its tables."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vbp_ros import VisualBackProp, authors_net, build_network, net_hvf, net_svf, traffic_sign_net

TABLE_1 = [(32, 123, 638), (32, 61, 318), (48, 59, 316), (48, 29, 157), (64, 27, 155),
           (64, 13, 77), (96, 11, 75), (96, 5, 37), (128, 3, 35), (128, 1, 17)]


def conv_output_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    handles = [m.register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.shape[1:])))
               for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        output = model(x)
    for handle in handles:
        handle.remove()
    return shapes, output


@pytest.mark.parametrize('factory, channels', [(net_svf, 1), (net_hvf, 3)])
def test_table_1_layer_sizes(factory, channels: int) -> None:
    model = factory().eval()
    shapes, output = conv_output_shapes(model, torch.rand(2, channels, 125, 640))
    assert shapes == TABLE_1
    assert output.shape == (2, 1)
    linear = [m.out_features for m in model.head if isinstance(m, nn.Linear)]
    assert linear == [1024, 512, 1]


def test_input_height_is_a_parameter() -> None:
    shapes, _ = conv_output_shapes(net_svf(input_height=135).eval(), torch.rand(1, 1, 135, 640))
    assert shapes[0] == (32, 133, 638) and shapes[-1] == (128, 1, 17)


def test_traffic_sign_network_classifies_43_signs() -> None:
    model = traffic_sign_net().eval()
    shapes, output = conv_output_shapes(model, torch.rand(2, 3, 125, 125))
    assert output.shape == (2, 43)
    assert shapes[-1] == (128, 1, 1)
    with VisualBackProp(model) as vbp:
        assert vbp(torch.rand(2, 3, 125, 125))[1].shape == (2, 1, 125, 125)


def test_authors_architecture() -> None:
    model = authors_net().eval()
    shapes, output = conv_output_shapes(model, torch.rand(1, 1, 125, 640))
    assert [s[0] for s in shapes] == [8, 8, 16, 16, 24, 24, 36, 36, 48, 48]
    assert shapes[-1] == (48, 1, 17)  # 816 features into the head, as in the Torch7 model
    assert sum(p.numel() for p in model.parameters()) == 175923


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet'.*netsvf"):
        build_network('resnet')


def test_too_small_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match='too small'):
        net_svf(input_height=40)
