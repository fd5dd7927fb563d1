"""The online engine: :class:`SaturationMonitor` and its parts.

``config``     :class:`MonitorConfig`, immutable and keyword-only;
``posterior``  the held-out gain posterior that drives the halt (:func:`heldout_gain_posterior`);
``calibration`` the map from the posterior model's P(gain) to the calibrated one it reports;
``decide``     the pure, priority-ordered decision over typed evidence;
``engine``     the update loop that gathers the evidence (:class:`SaturationMonitor`).
"""

from satmon.monitor.calibration import ProbabilityMap
from satmon.monitor.engine import MonitorConfig, SaturationMonitor, StateError

__all__ = ["MonitorConfig", "ProbabilityMap", "SaturationMonitor", "StateError"]
