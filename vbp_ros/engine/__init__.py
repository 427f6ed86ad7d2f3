"""The real-time engine: preprocessing, device staging, network and mask, pipeline monitoring
(ROS-free; imports core, pixels and interface)."""
