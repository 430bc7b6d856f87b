"""Model files read and written: safetensors, GGUF, and the atomic output folder."""
