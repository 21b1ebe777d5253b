"""Scoring a generator: feature extractors, reference statistics, the evaluator and sampling helpers."""
