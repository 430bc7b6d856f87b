"""Measuring a model: calibration tokens, layer scores, perplexity and generation, the quality curve."""
