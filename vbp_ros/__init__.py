"""vbp_ros: live VisualBackProp masks for steering networks, as a ROS 2 package.

The package's face is the ROS-free core::

    from vbp_ros import VisualBackProp
    with VisualBackProp(model) as vbp:
        output, mask = vbp(x)

The names below are imported on first use, so that the executables that do not compute
(camera, recorder, launch files) start without loading PyTorch.
"""

from importlib import import_module

_EXPORTS = {
    'CheckpointError': 'core.checkpoint', 'ModelSpec': 'core.checkpoint',
    'load_checkpoint': 'core.loading', 'save_checkpoint': 'core.checkpoint',
    'UnsupportedModelError': 'core.rules', 'EXPLAINERS': 'core.explainers',
    'GradCAM': 'core.gradcam', 'LRPEpsilon': 'core.lrp',
    'authors_net': 'core.networks', 'build_network': 'core.networks', 'net_hvf': 'core.networks',
    'net_svf': 'core.networks', 'traffic_sign_net': 'core.networks', 'pilotnet': 'core.networks',
    'pilotnet_elu': 'core.networks', 'commaai': 'core.networks', 'resnet18': 'core.networks',
    'mobilenet_v2': 'core.networks',
    'VBPExplanation': 'core.vbp', 'VisualBackProp': 'core.vbp',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(import_module(f'.{_EXPORTS[name]}', __name__), name)
