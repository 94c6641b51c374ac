"""torch's precisions: fp32, bf16, int8 weight-only, int8 dynamic (W8A8), int4 weight-only."""
