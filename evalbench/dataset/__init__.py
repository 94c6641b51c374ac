"""Evaluation text, read from EVALBENCH_DATA_DIR offline or from the hub online."""
