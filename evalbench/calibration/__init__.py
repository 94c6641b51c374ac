"""Data-aware quantization: the calibration methods a backend uses to choose its quantized weights."""
