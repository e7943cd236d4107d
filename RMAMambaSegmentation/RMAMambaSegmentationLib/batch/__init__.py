"""Segment many files: one row per case in summary.csv, shards for cluster arrays."""
