"""Online change detectors sharing one protocol: ``update(value, step) -> Event | None``.

* :class:`SlopeTest` - windowed OLS slope test; horizon = the remaining budget.
* :class:`LinearBOCPD` - Bayesian online changepoint detection with linear-regression segments.
* :class:`ResidualCUSUM` - two-sided CUSUM on standardized residuals of a reference curve.
"""

from satmon.detectors.base import Detector, Event
from satmon.detectors.bocpd import LinearBOCPD
from satmon.detectors.cusum import ResidualCUSUM
from satmon.detectors.slope import SlopeTest

DETECTORS = (SlopeTest, LinearBOCPD, ResidualCUSUM)

__all__ = ["DETECTORS", "Detector", "Event", "LinearBOCPD", "ResidualCUSUM", "SlopeTest"]
