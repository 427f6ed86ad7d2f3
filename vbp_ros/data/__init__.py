"""Data layer: data sets and scene generators (numpy and OpenCV; no torch, no rclpy)."""
