"""Pruning applied to the FP32 weights before the precision (``conf/pruning/<method>.yaml``)."""
