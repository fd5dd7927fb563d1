"""Post-hoc analysis: readers for training logs, reports and plots (``satmon.analysis``).

Importing this package loads no optional dependency: TensorBoard, MLflow and matplotlib are
imported by the functions that need them.
"""

from satmon.analysis.export import write_tidy_csv
from satmon.analysis.groups import GroupsConfig, RunPair, load_groups
from satmon.analysis.plots import plot_grid, plot_run
from satmon.analysis.readers import FORMATS, detect_format, read_run, read_runs
from satmon.analysis.report import Report, RunReport, build_report

__all__ = [
    "FORMATS",
    "GroupsConfig",
    "Report",
    "RunPair",
    "RunReport",
    "build_report",
    "detect_format",
    "load_groups",
    "plot_grid",
    "plot_run",
    "read_run",
    "read_runs",
    "write_tidy_csv",
]
