"""The torch backend on the CPU: eager PyTorch and :class:`~vbp_ros.explain.vbp.VisualBackProp`,
run at launch; fp16 and bf16 networks read a cast copy of the staged rows."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...explain.vbp import VisualBackProp
from ..config import PRECISIONS
from ...models.loading import flatten_outputs
from .base import SynchronousBackend


class TorchCpuBackend(SynchronousBackend):
    """A PyTorch network and its mask on the CPU.

    Args:
        model: the network (put in eval mode, cast to ``precision``).
        shape: (max_batch, C, H, W) of its input.
        precision: the network's, 'fp32', 'fp16' or 'bf16'.
    """

    name = 'torch'

    def __init__(self, model: nn.Module, shape: tuple[int, ...], precision: str) -> None:
        super().__init__(shape)
        self.precision, dtype = precision, PRECISIONS[precision]
        self.model = model.to('cpu', dtype).eval()
        self.vbp = VisualBackProp(self.model)
        self._cast = torch.empty(shape, dtype=dtype) if dtype != torch.float32 else None

    def run(self, slot: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The network and its mask on the staged rows, in inference mode."""
        network_input = self.inputs[slot][:count]
        if self._cast is not None:
            network_input = self._cast[:count].copy_(network_input)
        with torch.inference_mode():
            outputs, masks = self.vbp(network_input)
        return flat_outputs(outputs, count).numpy(), masks[:, 0].numpy()

    @property
    def description(self) -> str:
        """'cpu (cpu), <precision>, torch'."""
        return f'cpu (cpu), {self.precision}, torch'

    def close(self) -> None:
        """Drop the network, its mask's buffers and the staging buffers."""
        super().close()
        self.model = self.vbp = self._cast = None


def flat_outputs(output: object, count: int) -> torch.Tensor:
    """A network's output (a tensor or a tuple of tensors) as (count, K) float32, in order."""
    return torch.cat([t.detach().reshape(count, -1).float() for t in flatten_outputs(output)],
                     dim=1)
