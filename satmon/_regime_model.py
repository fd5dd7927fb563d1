"""Calibrated regime model (data only): written by benchmarks/_calibrate_regime.py.

7200 fitting snapshots (seeds 100-101), temperature fitted on 3600 snapshots (seed 102).
"""

FEATURES = ('z_time', 'z_recent', 'z_train', 'z_drop', 'z_gain', 'z_peak', 'log_points', 'elapsed')
COEFFICIENTS = {
    "generalizing": (0.03192, 0.95429, 0.22595, 0.42612, 0.58132, 0.10374, -0.04631, -0.72723, -0.19762),
    "memorizing": (0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000, 0.00000),
    "collapsing": (0.20323, 0.66931, 0.15082, 0.64615, 0.92578, -1.05461, 1.06784, -1.34228, -2.08296),
}
TEMPERATURE = (0.44769, -1.01128)
