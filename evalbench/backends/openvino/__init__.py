"""OpenVINO on the CPU: optimum-intel export, NNCF weight compression, the CPU plugin."""
