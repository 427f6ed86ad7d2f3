"""ROS-free core: VisualBackProp, networks, checkpoints (torch and numpy only)."""
