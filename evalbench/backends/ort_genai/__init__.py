"""ONNX Runtime GenAI: models exported by its model builder from the FP32 checkpoint, run on the CPU."""
