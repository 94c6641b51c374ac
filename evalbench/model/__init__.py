"""Loading causal LMs from the hub, local directories and GGUF files."""
