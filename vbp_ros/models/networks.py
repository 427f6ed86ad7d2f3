"""Steering networks: the paper's (Bojarski et al., Tables 1 and 2), the authors' released model,
and a zoo of the architectures users bring (PilotNet, comma.ai, ResNet-18, MobileNetV2).

Every network has ``in_channels`` and ``input_size`` (height, width) attributes and takes
[0, 1]-scaled pixels, as the engine prepares camera frames. :data:`ARCHITECTURES` names them for
checkpoints and ``vbp-train``.

The paper's networks are plain CNNs: blocks of batch normalization, a 3x3 convolution and a
ReLU, strides
alternating 1 and 2, then a fully connected head. Table 1's layer sizes imply an input height of
125 (the paper's text says 135; the released model uses 125x640), so the input size is a
parameter with default 125x640.

Reading of the paper used here, where it leaves room:
- NetHVF (history of video frames) is NetSVF (single video frame) with ``frames`` consecutive
  grayscale frames stacked as input channels; its layer sizes equal NetSVF's (Table 1).
- The traffic-sign network (Table 2) is the same convolution stack on a 3x125x125 colour input,
  which it reduces to 128x1x1, with a 43-way linear head.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TABLE1_CHANNELS = (32, 32, 48, 48, 64, 64, 96, 96, 128, 128)
AUTHORS_CHANNELS = (8, 8, 16, 16, 24, 24, 36, 36, 48, 48)


def conv_output_size(size: int, kernel: int = 3, stride: int = 1) -> int:
    """Output length of an unpadded convolution."""
    return (size - kernel) // stride + 1


class SteeringCNN(nn.Module):
    """Batch norm -> 3x3 convolution -> ReLU blocks (strides 1, 2, 1, 2, ...), then a head.

    Args:
        channels: output channels of each convolution.
        head: widths of the fully connected layers after flattening, the last one the output.
        in_channels: input channels (1 for a grayscale frame).
        input_size: (height, width) of the input.
        final_norm: a batch normalization after the last ReLU (the authors' released model).
    """

    def __init__(self, channels: Sequence[int], head: Sequence[int], in_channels: int = 1,
                 input_size: tuple[int, int] = (125, 640), final_norm: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.input_size = tuple(input_size)
        blocks: list[nn.Module] = []
        previous = in_channels
        height, width = input_size
        for index, width_out in enumerate(channels):
            stride = 1 + index % 2
            blocks += [nn.BatchNorm2d(previous), nn.Conv2d(previous, width_out, 3, stride),
                       nn.ReLU(inplace=True)]
            previous = width_out
            height, width = conv_output_size(height, 3, stride), conv_output_size(width, 3, stride)
            if height < 1 or width < 1:
                raise ValueError(f'input size {input_size} is too small for {len(channels)} '
                                 'convolutions')
        if final_norm:
            blocks.append(nn.BatchNorm2d(previous))
        self.features = nn.Sequential(*blocks)
        layers: list[nn.Module] = [nn.Flatten()]
        features = previous * height * width
        for index, units in enumerate(head):
            layers.append(nn.Linear(features, units))
            if index < len(head) - 1:
                layers.append(nn.ReLU())
            features = units
        self.head = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def net_svf(input_height: int = 125, input_width: int = 640) -> SteeringCNN:
    """NetSVF (Table 1): one grayscale frame in, the steering angle out."""
    return SteeringCNN(TABLE1_CHANNELS, (1024, 512, 1), 1, (input_height, input_width))


def net_hvf(frames: int = 3, input_height: int = 125, input_width: int = 640) -> SteeringCNN:
    """NetHVF (Table 1): ``frames`` consecutive grayscale frames stacked as channels."""
    return SteeringCNN(TABLE1_CHANNELS, (1024, 512, 1), frames, (input_height, input_width))


def traffic_sign_net(classes: int = 43, input_size: int = 125) -> SteeringCNN:
    """The traffic-sign classifier (Table 2): a colour 125x125 image in, 43 class scores out."""
    return SteeringCNN(TABLE1_CHANNELS, (classes,), 3, (input_size, input_size))


def authors_net(input_height: int = 125, input_width: int = 640) -> SteeringCNN:
    """The architecture of the paper authors' released Torch7 steering model."""
    return SteeringCNN(AUTHORS_CHANNELS, (128, 16, 1), 1, (input_height, input_width),
                       final_norm=True)


# -- the zoo: architectures of public steering projects -----------------------------------------

class PilotNet(nn.Module):
    """NVIDIA's PilotNet, written the way public PyTorch ports write it.

    Source: Bojarski et al. 2016, "End to End Learning for Self-Driving Cars" (arXiv:1604.07316),
    Figure 4, and Bojarski et al. 2017 (arXiv:1704.07911): a 3x66x200 input, a fixed
    normalization layer, convolutions 24, 36, 48 (5x5, stride 2) and 64, 64 (3x3), fully
    connected 100, 50, 10 and the output. NVIDIA's activations are ReLUs; the most common
    public port (naokishibuya/car-behavioral-cloning, Keras) uses ELUs, so ``activation``
    picks either. The activations are functional calls in ``forward()`` and the normalization
    is arithmetic (pixels in [0, 1] to [-1, 1], the ports' ``x / 127.5 - 1``).
    """

    CONVOLUTIONS = ((24, 5, 2), (36, 5, 2), (48, 5, 2), (64, 3, 1), (64, 3, 1))
    HEAD = (100, 50, 10)

    def __init__(self, activation: str = 'relu', in_channels: int = 3,
                 input_size: tuple[int, int] = (66, 200)) -> None:
        super().__init__()
        if activation not in ('relu', 'elu'):
            raise ValueError(f"activation must be 'relu' or 'elu', not {activation!r}")
        self.activation = getattr(F, activation)
        self.in_channels, self.input_size = in_channels, tuple(input_size)
        height, width = input_size
        previous = in_channels
        for index, (channels, kernel, stride) in enumerate(self.CONVOLUTIONS, start=1):
            self.add_module(f'conv{index}', nn.Conv2d(previous, channels, kernel, stride))
            height = conv_output_size(height, kernel, stride)
            width = conv_output_size(width, kernel, stride)
            if height < 1 or width < 1:
                raise ValueError(f'input size {tuple(input_size)} is too small for the network')
            previous = channels
        features = previous * height * width
        for index, units in enumerate(self.HEAD + (1,), start=1):
            self.add_module(f'fc{index}', nn.Linear(features, units))
            features = units

    def forward(self, x: Tensor) -> Tensor:
        x = x * 2.0 - 1.0
        for index in range(1, len(self.CONVOLUTIONS) + 1):
            x = self.activation(getattr(self, f'conv{index}')(x))
        x = torch.flatten(x, 1)
        for index in range(1, len(self.HEAD) + 1):
            x = self.activation(getattr(self, f'fc{index}')(x))
        return getattr(self, f'fc{len(self.HEAD) + 1}')(x)


class CommaAI(nn.Module):
    """comma.ai's steering model.

    Source: commaai/research, ``train_steering_model.py`` (2016; Santana and Hotz, "Learning a
    Driving Simulator", arXiv:1608.01230): a 3x160x320 input normalized to [-1, 1]; convolutions
    16 (8x8, stride 4), ELU, 32 (5x5, stride 2), ELU, 64 (5x5, stride 2) with no activation
    after the last one; flatten, dropout 0.2, ELU, dense 512, dropout 0.5, ELU, dense 1. Keras'
    ``border_mode="same"`` is reproduced exactly with zero padding before each convolution (the
    odd pixel at the bottom and right, as Keras pads).
    """

    CONVOLUTIONS = ((16, 8, 4), (32, 5, 2), (64, 5, 2))

    def __init__(self, in_channels: int = 3, input_size: tuple[int, int] = (160, 320)) -> None:
        super().__init__()
        self.in_channels, self.input_size = in_channels, tuple(input_size)
        layers: list[nn.Module] = []
        height, width = input_size
        previous = in_channels
        for index, (channels, kernel, stride) in enumerate(self.CONVOLUTIONS):
            (top, bottom), (left, right) = (_keras_same(height, kernel, stride),
                                            _keras_same(width, kernel, stride))
            layers += [nn.ZeroPad2d((left, right, top, bottom)),
                       nn.Conv2d(previous, channels, kernel, stride)]
            if index < len(self.CONVOLUTIONS) - 1:
                layers.append(nn.ELU())
            height, width = math.ceil(height / stride), math.ceil(width / stride)
            previous = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.ELU(),
                                  nn.Linear(previous * height * width, 512), nn.Dropout(0.5),
                                  nn.ELU(), nn.Linear(512, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x * 2.0 - 1.0))


class BasicBlock(nn.Module):
    """ResNet's basic block (torchvision.models.resnet.BasicBlock): two 3x3 convolutions with
    batch normalization, an identity or 1x1-convolution shortcut added in place, one ReLU
    module used twice."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride,
                                                      bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """A ResNet-18 steering network.

    Source: He et al. 2016, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385),
    Table 1, as torchvision.models.resnet18 builds it: a 7x7 stride-2 stem with batch norm and
    ReLU, 3x3 stride-2 max pooling, four stages of two basic blocks (``width`` x 1, 2, 4, 8
    channels; 64 is the original), global average pooling and one linear output (the steering
    angle) instead of the 1000 classes. Input 3x66x200 by default (PilotNet's camera crop).
    """

    def __init__(self, width: int = 64, in_channels: int = 3,
                 input_size: tuple[int, int] = (66, 200), outputs: int = 1) -> None:
        super().__init__()
        self.in_channels, self.input_size = in_channels, tuple(input_size)
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        previous = width
        for stage, stride in enumerate((1, 2, 2, 2), start=1):
            channels = width * 2 ** (stage - 1)
            self.add_module(f'layer{stage}', nn.Sequential(
                BasicBlock(previous, channels, stride), BasicBlock(channels, channels)))
            previous = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, outputs)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _conv_bn_relu6(in_channels: int, channels: int, kernel: int = 3, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, channels, kernel, stride, (kernel - 1) // 2,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2's block (torchvision.models.mobilenetv2.InvertedResidual): 1x1 expansion with
    ReLU6, 3x3 depthwise convolution with ReLU6, linear 1x1 projection; the input is added
    when the block keeps the size and the channels."""

    def __init__(self, in_channels: int, channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = round(in_channels * expansion)
        self.use_residual = stride == 1 and in_channels == channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, 1))
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """A MobileNetV2 steering network.

    Source: Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
    (arXiv:1801.04381), Table 2, as torchvision.models.mobilenet_v2 builds it: a 3x3 stride-2
    stem, seventeen inverted residual blocks (expansion t, channels c, repeats n, stride s as in
    the table, channels times ``width`` rounded to multiples of 8), a 1x1 convolution to 1280
    channels, global average pooling (functional), dropout and one linear output. Input
    3x66x200 by default.
    """

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, width: float = 1.0, in_channels: int = 3,
                 input_size: tuple[int, int] = (66, 200), outputs: int = 1) -> None:
        super().__init__()
        self.in_channels, self.input_size = in_channels, tuple(input_size)
        previous = _divisible(32 * width)
        last = _divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, previous, 3, 2)]
        for expansion, channels, repeats, stride in self.SETTINGS:
            channels = _divisible(channels * width)
            for index in range(repeats):
                layers.append(InvertedResidual(previous, channels, stride if index == 0 else 1,
                                               expansion))
                previous = channels
        layers.append(_conv_bn_relu6(previous, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, outputs))

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def _divisible(value: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: the nearest multiple of 8, never 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _keras_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras 'same' padding (before, after) along one axis: ceil(size / stride) outputs."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pilotnet(activation: str = 'relu', in_channels: int = 3, input_height: int = 66,
             input_width: int = 200) -> PilotNet:
    """PilotNet with ReLUs (NVIDIA's choice), 3x66x200 by default."""
    return PilotNet(activation, in_channels, (input_height, input_width))


def pilotnet_elu(in_channels: int = 3, input_height: int = 66, input_width: int = 200
                 ) -> PilotNet:
    """PilotNet with ELUs (the common public port)."""
    return PilotNet('elu', in_channels, (input_height, input_width))


def commaai(in_channels: int = 3, input_height: int = 160, input_width: int = 320) -> CommaAI:
    """comma.ai's steering model, 3x160x320 by default."""
    return CommaAI(in_channels, (input_height, input_width))


def resnet18(width: int = 64, in_channels: int = 3, input_height: int = 66,
             input_width: int = 200) -> ResNet18:
    """ResNet-18 with one steering output, 3x66x200 by default."""
    return ResNet18(width, in_channels, (input_height, input_width))


def mobilenet_v2(width: float = 1.0, in_channels: int = 3, input_height: int = 66,
                 input_width: int = 200) -> MobileNetV2:
    """MobileNetV2 with one steering output, 3x66x200 by default."""
    return MobileNetV2(width, in_channels, (input_height, input_width))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    'netsvf': net_svf,
    'nethvf': net_hvf,
    'traffic_sign': traffic_sign_net,
    'authors': authors_net,
    'pilotnet': pilotnet,
    'pilotnet_elu': pilotnet_elu,
    'commaai': commaai,
    'resnet18': resnet18,
    'mobilenet_v2': mobilenet_v2,
}
#: The architectures users bring, beside the paper's (vbp-bench and the tests cover them).
ZOO = ('pilotnet', 'pilotnet_elu', 'commaai', 'resnet18', 'mobilenet_v2')


def build_network(architecture: str, **arguments: object) -> nn.Module:
    """A network by its registered name and constructor arguments."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f'unknown architecture {architecture!r}; known: '
                         f'{", ".join(sorted(ARCHITECTURES))}') from None
    return factory(**arguments)
