"""Readers that turn training logs of many formats into :class:`satmon.Run` objects.

Use :func:`read_run` / :func:`read_runs`; :data:`FORMATS` lists what is understood.
"""

from satmon.analysis.readers.api import FORMATS, detect_format, read_run, read_runs
from satmon.analysis.readers.metric_log import MetricLog, build_run

__all__ = ["FORMATS", "MetricLog", "build_run", "detect_format", "read_run", "read_runs"]
