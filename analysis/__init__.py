"""Post-hoc analysis: readers for training logs, reports and plots (``satmon.analysis``).

Importing this package loads no optional dependency: TensorBoard, MLflow and matplotlib are
imported by the functions that need them.
"""

from satmon.analysis.readers import FORMATS, detect_format, read_run, read_runs

__all__ = ["FORMATS", "detect_format", "read_run", "read_runs"]
