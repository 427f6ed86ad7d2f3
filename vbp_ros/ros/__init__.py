"""ROS 2 adapters: the only place rclpy and message packages are imported; no computing here
(imports interface, core, pixels, engine, live, data, drive and bench)."""
