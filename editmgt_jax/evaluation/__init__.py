"""Evaluation of edits against ground-truth masks (metrics, per-category summaries, figures)."""
