"""ShortGPT Desktop: delete a language model's most redundant layers, on your own machine."""

__version__ = "0.1.0"
