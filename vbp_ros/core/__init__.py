"""ROS-free core: VisualBackProp, LRP, networks, checkpoints, metrics (imports torch and numpy
only, nothing else of the package)."""
