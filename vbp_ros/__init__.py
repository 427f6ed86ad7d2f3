"""vbp_ros: live VisualBackProp masks for steering networks, as a ROS 2 package.

The package's face is the ROS-free core::

    from vbp_ros import VisualBackProp
    with VisualBackProp(model) as vbp:
        output, mask = vbp(x)
"""

from .core.checkpoint import CheckpointError, ModelSpec, load_checkpoint, save_checkpoint
from .core.layout import UnsupportedModelError
from .core.networks import authors_net, build_network, net_hvf, net_svf, traffic_sign_net
from .core.vbp import VBPExplanation, VisualBackProp

__all__ = [
    'CheckpointError', 'ModelSpec', 'UnsupportedModelError', 'VBPExplanation', 'VisualBackProp',
    'authors_net', 'build_network', 'load_checkpoint', 'net_hvf', 'net_svf', 'save_checkpoint',
    'traffic_sign_net',
]
