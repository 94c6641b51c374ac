"""Runtimes as a sweep axis: one folder per backend (``config.py`` and ``backend.py``), ``conf/backend/<name>.yaml``."""
