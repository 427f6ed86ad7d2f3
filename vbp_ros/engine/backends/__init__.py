"""The engine's backends, one class each, behind one interface (:mod:`.base`): torch on the CPU,
torch on CUDA, onnxruntime; :func:`.choice.open_backend` picks one once per engine."""
