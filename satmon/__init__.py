"""satmon: saturation monitoring for RL from verifiable rewards.

The core package knows nothing about trainers and imports only numpy and scipy at module level;
trainer adapters live in :mod:`satmon.callbacks` and post-hoc readers, reports and plots in
:mod:`satmon.analysis`.
"""

from satmon._version import __version__
from satmon.decision import Action, Decision, Evidence, Phase, Reason
from satmon.keys import KeyMap
from satmon.monitor import MonitorConfig, SaturationMonitor
from satmon.replay import ReplayResult, replay
from satmon.run import CleaningReport, HeldoutSeries, Run, Series, clean_series
from satmon.saturation import (
    DataGap,
    HeldoutGain,
    SaturationAnalysis,
    SeedAnalysis,
    analyze_saturation,
    analyze_seeds,
    average_runs,
    data_gap,
    group_average,
    heldout_at,
    heldout_gain,
    saturation_step,
)

__all__ = [
    "__version__",
    "Action",
    "Decision",
    "Evidence",
    "KeyMap",
    "Phase",
    "Reason",
    "CleaningReport",
    "DataGap",
    "HeldoutGain",
    "HeldoutSeries",
    "MonitorConfig",
    "ReplayResult",
    "SaturationMonitor",
    "Run",
    "SaturationAnalysis",
    "SeedAnalysis",
    "Series",
    "analyze_saturation",
    "analyze_seeds",
    "average_runs",
    "clean_series",
    "data_gap",
    "group_average",
    "heldout_at",
    "heldout_gain",
    "replay",
    "saturation_step",
]
