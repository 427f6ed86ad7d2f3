"""vbp-fleet's library: bag discovery, frame reading, mask statistics, the Ray run and its
results (imports interface, core, pixels, engine and data; ray and pyarrow)."""
