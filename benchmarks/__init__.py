"""Benchmarks: clipforge side by side with open_clip and transformers, in one run, as ratios."""
