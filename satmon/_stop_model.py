"""Calibrated stopping model (data only): written by benchmarks/_calibrate_stopping.py.

Logistic coefficients fitted on 18814 post-saturation evaluations of 900 runs (seed 100);
threshold 0.96 and patience 2 chosen on 900 runs (seed 101):
false-halt 0.0056, compute saved on memorizing runs 0.415.
"""

FEATURES = ('gain_z_recent', 'gain_z_all', 'z_recent', 'z_all', 'z_train', 'z_drop', 'z_gain', 'p_saturated', 'since_sat', 'frac_left', 'log_points', 'log_sd_gain')
COEFFICIENTS = (-11.397103, 3.269739, -0.978684, -2.607724, 2.087968, -0.381692, -0.007663, -0.160415, -0.737291, 13.216337, 9.508586, 0.039132, 0.704441)
HALT_THRESHOLD = 0.96
PATIENCE = 2
