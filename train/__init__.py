"""Datasets, the training loop with AZO, evaluation and reports."""
