"""Stage 2: dataset file → checkpoints, metrics, predictions, report."""
