"""vbp-fleet's data: bag discovery, frame reading and the results store (imports interface,
pixels, explain, models and data; pyarrow). Its compute, the Ray workers, is in vbp_ros.fleet."""
