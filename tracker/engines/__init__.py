"""Inference engines for the landmark model: CPU (OpenVINO, ONNX Runtime, torch) and GPU
(CUDA graphs, TensorRT)."""
