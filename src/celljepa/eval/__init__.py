"""Evaluation: E-distance, mean-level and retrieval metrics, bootstrap CIs, reports (evaluation harness)."""
