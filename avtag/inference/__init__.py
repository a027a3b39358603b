"""Inference shared by `avtag run` and batch evaluation: result types, windows, the pipeline."""
