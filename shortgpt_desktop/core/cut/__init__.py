"""Cutting layers out: which ones (plan, selection), how (surgery), and mending the cut (repair, healing)."""
