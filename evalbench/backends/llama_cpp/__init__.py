"""The llama.cpp backend: GGUF files made from the model's FP32 weights, run through llama-cpp-python."""
