"""The axis orders of a network's image tensors, one owner for the names that model cards, the
ONNX graph reader and the engine's staging share."""

NCHW, NHWC = 'nchw', 'nhwc'
INPUT_LAYOUTS = (NCHW, NHWC)
