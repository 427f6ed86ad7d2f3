"""A user's own steering networks, as a package of theirs would hold them (for the tests).

``install(folder)`` writes them as the module ``road_nets`` into ``folder`` together with a
distribution ``road_nets`` that registers ``road_pilotnet`` under the ``vbp_ros.networks``
entry points, so that ``folder`` on the Python path is an installed package in every sense that
vbp_ros uses.
"""

from __future__ import annotations

from pathlib import Path

MODULE = '''
"""NVIDIA's PilotNet (Bojarski et al. 2016): 3x66x200 YUV, normalization, 5 convolutions,
fully connected 100-50-10 and the outputs."""
import torch
from torch import nn

ACTIVATIONS = {'elu': nn.ELU, 'relu': nn.ReLU}


class PilotNet(nn.Module):
    def __init__(self, activation='elu', outputs=1):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 5, 2), act(), nn.Conv2d(24, 36, 5, 2), act(),
            nn.Conv2d(36, 48, 5, 2), act(), nn.Conv2d(48, 64, 3), act(),
            nn.Conv2d(64, 64, 3), act())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 18, 100), act(),
                                  nn.Linear(100, 50), act(), nn.Linear(50, 10), act(),
                                  nn.Linear(10, outputs))

    def forward(self, x):
        return self.head(self.features(x / 127.5 - 1.0))


class Broken(PilotNet):
    """Gives NaN, as a network with a bad layer would."""

    def forward(self, x):
        return super().forward(x) * float('nan')


def build(**arguments):
    return PilotNet(**arguments)
'''

CARD = '''architecture: road_nets:build
arguments: {activation: elu, outputs: 2}
input:
  color: yuv
  height: 66
  width: 200
  crop: [200, 0, 280, 640]
  scale: 1.0
output:
  index: 0
  unit: deg
  names: [steering, throttle]
'''
# The same card for the network as an ONNX file: the graph is the architecture.
ONNX_CARD = CARD.replace('architecture: road_nets:build\n', '').replace(
    'arguments: {activation: elu, outputs: 2}\n', '')


def install(folder: Path) -> Path:
    """Write the module and its distribution's metadata into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'road_nets.py').write_text(MODULE)
    info = folder / 'road_nets-0.1.dist-info'
    info.mkdir(exist_ok=True)
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: road_nets\nVersion: 0.1\n')
    (info / 'entry_points.txt').write_text(
        '[vbp_ros.networks]\nroad_pilotnet = road_nets:PilotNet\n')
    return folder
