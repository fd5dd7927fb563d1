"""Calibrated stopping model (data only): written by benchmarks/_calibrate_stopping.py.

Logistic coefficients fitted on 18790 post-saturation evaluations of 900 runs (seed 100);
threshold 0.96 and patience 2 chosen on 900 runs (seed 101):
false-halt 0.0056, compute saved on memorizing runs 0.429.
"""

FEATURES = ('gain_z_recent', 'gain_z_all', 'z_recent', 'z_all', 'z_train', 'z_drop', 'z_gain', 'p_saturated', 'since_sat', 'frac_left', 'log_points', 'log_sd_gain')
COEFFICIENTS = (-11.501535, 3.401147, -0.995689, -2.782462, 2.174855, -0.457045, -0.022846, -0.120651, -0.761856, 13.567649, 9.779498, -0.003332, 0.680369)
HALT_THRESHOLD = 0.96
PATIENCE = 2
