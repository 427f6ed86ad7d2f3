"""What every backend of the engine does, and the flow the synchronous ones share.

A backend owns the staging buffers that the engine preprocesses frames into (one per slot: a
submission in flight) and runs the network and its VisualBackProp mask on them:

- :meth:`Backend.stage` hands out a slot's buffer once it may be written again;
- :meth:`Backend.launch` starts the network on the first ``count`` rows of a slot;
- :meth:`Backend.collect` waits for that slot's outputs and masks;
- :attr:`Backend.description` names device, precision and backend; :meth:`Backend.close`
  gives back what the backend holds.

The CPU backends run at launch (:class:`SynchronousBackend`: a subclass overrides
:meth:`~SynchronousBackend.run` only); torch on CUDA queues its work on streams and waits at
collect (:mod:`vbp_ros.engine.backends.torch_cuda`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Computed:
    """A slot's results: outputs (count, K) and masks (count, H, W), float32 on the host, and
    the milliseconds of the host-to-device copy (0 on the CPU) and of the network with its
    mask."""

    outputs: np.ndarray
    masks: np.ndarray
    transfer_ms: float
    compute_ms: float


class Backend:
    """The interface of a backend (see the module docstring).

    Args:
        shape: (max_batch, C, H, W) of the network input.
        slots: submissions in flight at most.
        pinned: staging buffers in page-locked memory (for asynchronous copies to CUDA).
        channels_last: staging buffers laid out NHWC in memory (a channels-last graph reads
            them in place).
    """

    name = ''  # 'torch' or 'onnxruntime', as the engine reports it

    def __init__(self, shape: tuple[int, ...], slots: int = 1, pinned: bool = False,
                 channels_last: bool = False) -> None:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.inputs = [torch.empty(shape, pin_memory=pinned, memory_format=layout)
                       for _ in range(slots)]
        self.staging = [tensor.numpy() for tensor in self.inputs]

    @property
    def slots(self) -> int:
        """Submissions in flight at most."""
        return len(self.inputs)

    def stage(self, slot: int) -> np.ndarray:
        """The slot's staging buffer (max_batch, C, H, W), free to be written."""
        return self.staging[slot]

    def launch(self, slot: int, count: int) -> None:
        """Start the network and its mask on the first ``count`` staged rows of ``slot``."""
        raise NotImplementedError

    def collect(self, slot: int, count: int) -> Computed:
        """The results of the slot's launch, once they are there."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        """Device, precision and backend, e.g. for diagnostics."""
        raise NotImplementedError

    def close(self) -> None:
        """Give back the network and the buffers; the backend cannot be used afterwards."""
        self.inputs, self.staging = [], []


class SynchronousBackend(Backend):
    """A backend that computes at launch, in the calling thread (the CPU backends): a subclass
    overrides :meth:`run` only."""

    def __init__(self, shape: tuple[int, ...], channels_last: bool = False) -> None:
        super().__init__(shape, channels_last=channels_last)
        self._computed: list[Computed | None] = [None] * self.slots

    def launch(self, slot: int, count: int) -> None:
        """Run the network and its mask now; collect hands the results out."""
        start = time.perf_counter()
        outputs, masks = self.run(slot, count)
        self._computed[slot] = Computed(outputs, masks, 0.0,
                                        (time.perf_counter() - start) * 1e3)

    def collect(self, slot: int, count: int) -> Computed:
        """The results that the slot's launch computed."""
        computed, self._computed[slot] = self._computed[slot], None
        return computed

    def run(self, slot: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Outputs (count, K) and masks (count, H, W), float32, of the slot's staged rows."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the buffers and any result not collected."""
        super().close()
        self._computed = []
