"""ROS 2 adapters: the only place rclpy and message packages are imported; no computing here
(imports interface, pixels, explain, models, engine, live, data, drive and bench)."""
