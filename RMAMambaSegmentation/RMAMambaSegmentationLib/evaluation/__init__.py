"""Metrics and the evaluation of predicted masks against references."""
