"""The real-time engine: device staging, network and mask, the frame pipeline, monitoring
(ROS-free; imports interface, pixels, explain and models)."""
