"""The whole fuse of a preset as one portable ONNX graph (`semfuse-rt export`), and what
checks it for TensorRT."""
