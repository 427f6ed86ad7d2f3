"""vbp_ros: live VisualBackProp masks for steering networks, as a ROS 2 package.

The package's face is the ROS-free explanation layer::

    from vbp_ros import VisualBackProp
    with VisualBackProp(model) as vbp:
        output, mask = vbp(x)

The names below are imported on first use, so that the executables that do not compute
(camera, recorder, launch files) start without loading PyTorch.
"""

from importlib import import_module

from . import moved

moved.install()

_EXPORTS = {
    'CheckpointError': 'models.checkpoint', 'ModelSpec': 'models.checkpoint',
    'load_checkpoint': 'models.loading', 'save_checkpoint': 'models.checkpoint',
    'UnsupportedModelError': 'explain.rules', 'EXPLAINERS': 'explain.explainers',
    'GradCAM': 'explain.gradcam', 'LRPEpsilon': 'explain.lrp',
    **{name: 'models.networks' for name in (
        'authors_net', 'build_network', 'net_hvf', 'net_svf', 'traffic_sign_net', 'pilotnet',
        'pilotnet_elu', 'commaai', 'resnet18', 'mobilenet_v2')},
    'VBPExplanation': 'explain.vbp', 'VisualBackProp': 'explain.vbp',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(import_module(f'.{_EXPORTS[name]}', __name__), name)
