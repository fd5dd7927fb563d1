"""Calibrated stopping model (data only): written by benchmarks/_calibrate_stopping.py.

Logistic coefficients fitted on 17595 post-saturation evaluations of 900 runs (seed 100);
threshold chosen on 900 runs (seed 101): false-halt 0.0044, compute saved on memorizing runs 0.400.
"""

FEATURES = ('gain_z_recent', 'gain_z_all', 'z_recent', 'z_all', 'z_train', 'z_drop', 'z_gain', 'p_saturated', 'since_sat', 'frac_left', 'log_points', 'log_sd_gain')
COEFFICIENTS = (-13.443953, 3.656387, -1.057568, -2.951077, 2.337073, -0.412130, 0.035660, -0.144631, 1.141512, 13.391034, 10.181723, -0.063487, 0.791380)
HALT_THRESHOLD = 0.98

