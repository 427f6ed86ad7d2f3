"""vbp-fleet's compute: the Ray workers that run engines over segments of recordings and
draw their overlays, and the cluster that schedules them (imports interface, pixels, models,
explain, engine and data; ray)."""
