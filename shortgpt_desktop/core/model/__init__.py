"""What a model is, costs and needs: its source on disk, its config, its family, its device and memory."""
