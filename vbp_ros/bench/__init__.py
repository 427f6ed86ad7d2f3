"""The node benchmarks without ROS imports: the near-free network that the node's ceiling is
measured with, and the figures of that measurement (imports core and engine)."""
