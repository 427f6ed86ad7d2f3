"""Explanations of a network: VisualBackProp (PyTorch and in-graph ONNX), LRP, Grad-CAM,
their targets and metrics, and attention statistics of a mask; ROS-free (imports interface
only)."""
