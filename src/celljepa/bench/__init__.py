"""Workflows: the end-to-end benchmark (ingest, split, baselines, JEPA, transition, report)."""
