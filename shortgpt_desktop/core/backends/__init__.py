"""Ways to run a model: one decoder layer at a time when it does not fit in memory."""
