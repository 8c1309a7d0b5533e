"""The landmark engine names (kept free of heavy imports: the CLI and config read them)."""

# landmark engines (tracker.engines.registry builds them; "onnx" is an alias of "onnxruntime")
ENGINES = ("auto", "openvino", "openvino-fp32", "onnxruntime", "onnx", "torch", "tensorrt", "cuda")
_NAMED = [e for e in ENGINES if e != "onnx"]
ENGINE_HELP = f"{', '.join(_NAMED[:-1])} or {_NAMED[-1]} (default auto)."
