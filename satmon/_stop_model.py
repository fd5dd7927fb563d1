"""Calibrated stopping model (data only): written by benchmarks/_calibrate_stopping.py.

Logistic coefficients fitted on 18744 post-saturation evaluations of 900 runs (seed 100);
threshold chosen on 900 runs (seed 101): false-halt 0.0033, compute saved on memorizing runs 0.414.
"""

FEATURES = ('gain_z_recent', 'gain_z_all', 'z_recent', 'z_all', 'z_train', 'z_drop', 'z_gain', 'p_saturated', 'since_sat', 'frac_left', 'log_points', 'log_sd_gain')
COEFFICIENTS = (-11.691104, 3.619362, -1.107669, -2.895498, 2.266694, -0.384286, 0.026452, -0.160113, -0.772188, 14.115588, 9.946834, -0.100770, 0.733255)
HALT_THRESHOLD = 0.97
