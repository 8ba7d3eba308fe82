"""Training: data, losses, the resumable trainer and ``vlmcodec train``."""
