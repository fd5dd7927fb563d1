"""Calibrated stopping model (data only): written by benchmarks/_calibrate_stopping.py.

Logistic coefficients fitted on 18777 post-saturation evaluations of 900 runs (seed 100);
threshold and patience chosen on 900 runs (seed 101): false-halt 0.0056, compute saved on memorizing runs 0.430.
"""

FEATURES = ('gain_z_recent', 'gain_z_all', 'z_recent', 'z_all', 'z_train', 'z_drop', 'z_gain', 'p_saturated', 'since_sat', 'frac_left', 'log_points', 'log_sd_gain')
COEFFICIENTS = (-11.691949, 3.487375, -1.030119, -2.829927, 2.196389, -0.438417, 0.002483, -0.121078, -0.704600, 13.750823, 9.933528, -0.018329, 0.678830)
HALT_THRESHOLD = 0.96
PATIENCE = 2
