"""Live view for browsers: the Foxglove WebSocket server of vbp_node's outputs (imports
interface and pixels; no ROS)."""
