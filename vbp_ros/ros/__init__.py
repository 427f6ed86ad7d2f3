"""ROS 2 adapters: the only place rclpy and message packages are imported; no computing here
(imports interface, core, pixels, engine, data and drive)."""
