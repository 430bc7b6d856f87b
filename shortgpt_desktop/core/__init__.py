"""The engine: loading, calibration, scoring, pruning, saving, evaluation. Never imports Qt."""
