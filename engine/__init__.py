"""The SMA-SNN model (step and sequence forms), ONNX export and runtimes."""
