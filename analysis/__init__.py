"""Post-hoc analysis: readers for training logs, reports and plots (``satmon.analysis``)."""
