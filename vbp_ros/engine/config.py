"""The engine's settings: every default and every check of them, in one place.

:class:`EngineConfig` is what :class:`~vbp_ros.engine.engine.VBPEngine`,
:func:`~vbp_ros.engine.build.build_engine`, vbp_node (its parameter table and its builds) and
vbp-fleet's workers take. A value that cannot work raises ValueError with a one-line reason when
the config is made; what depends on the machine or the model (a CUDA device that is missing, an
ONNX graph that fixes its batch size) is found when the engine is built.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

import torch

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
BACKENDS = ('auto', 'torch', 'onnxruntime')
#: The enumerated settings and the values each may take.
CHOICES = {'backend': BACKENDS, 'precision': tuple(PRECISIONS)}


def choice_problem(name: str, value: object,
                   choices: Mapping[str, tuple[str, ...]] = CHOICES) -> str | None:
    """Why ``value`` cannot be the enumerated setting ``name`` of ``choices``, or None."""
    if name in choices and value not in choices[name]:
        return f'{name} must be one of {", ".join(choices[name])}, not {value!r}'
    return None


@dataclass(frozen=True)
class EngineConfig:
    """How an engine runs its network.

    Attributes:
        backend: 'torch', 'onnxruntime' or 'auto': onnxruntime for ONNX models and for PyTorch
            networks on the CPU in fp32 without CUDA graphs, else torch (the engine falls back
            to torch where the export or the graph reading fails).
        device: 'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'; with onnxruntime also
            'tensorrt[:N]'.
        precision: 'fp32', 'fp16' or 'bf16' for the network; masks are float32 regardless.
        cuda_graphs: capture network and mask as one CUDA graph (CUDA only).
        threads: CPU threads for torch, onnxruntime and OpenCV's preprocessing (0 keeps their
            defaults: one per physical core). Process-wide for torch and OpenCV.
        max_batch: most frames per submission (one forward pass).
    """

    backend: str = 'auto'
    device: str = 'auto'
    precision: str = 'fp32'
    cuda_graphs: bool = False
    threads: int = 0
    max_batch: int = 1

    def __post_init__(self) -> None:
        """ValueError naming the first setting that cannot work."""
        for name in CHOICES:
            problem = choice_problem(name, getattr(self, name))
            if problem:
                raise ValueError(problem)
        if self.max_batch < 1:
            raise ValueError(f'max_batch must be at least 1, not {self.max_batch}')
        if self.threads < 0:
            raise ValueError(f'threads must be 0 (the libraries\' default) or more, not '
                             f'{self.threads}')

    @classmethod
    def of(cls, values: Mapping[str, object]) -> EngineConfig:
        """The config of those ``values`` that name its fields (e.g. a node's parameters);
        the others are left out, and a field not given keeps its default."""
        names = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in names})
