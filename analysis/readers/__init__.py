"""Readers that turn training logs of many formats into :class:`satmon.Run` objects.

Use :func:`read_run` / :func:`read_runs`; :data:`FORMATS` lists what is understood. Every
failure to read a file raises :class:`ReadError` (a ValueError; :class:`MissingKeyError`, also a
KeyError, for a configured key the log lacks); see :mod:`satmon.analysis.readers.errors`.
"""

from satmon.analysis.readers.api import FORMATS, detect_format, read_run, read_runs
from satmon.analysis.readers.errors import MissingKeyError, ReadError
from satmon.analysis.readers.metric_log import MetricLog, build_run

__all__ = ["FORMATS", "MetricLog", "MissingKeyError", "ReadError", "build_run", "detect_format",
           "read_run", "read_runs"]
