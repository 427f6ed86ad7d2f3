"""The paper's networks (Bojarski et al., Tables 1 and 2) and the authors' released model.

All are plain CNNs: blocks of batch normalization, a 3x3 convolution and a ReLU, strides
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

from typing import Callable, Sequence

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


ARCHITECTURES: dict[str, Callable[..., SteeringCNN]] = {
    'netsvf': net_svf,
    'nethvf': net_hvf,
    'traffic_sign': traffic_sign_net,
    'authors': authors_net,
}


def build_network(architecture: str, **arguments: int) -> SteeringCNN:
    """A network by its registered name and constructor arguments."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f'unknown architecture {architecture!r}; known: '
                         f'{", ".join(sorted(ARCHITECTURES))}') from None
    return factory(**arguments)
