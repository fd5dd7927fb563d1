"""satmon lab: miniature weak-supervision RLVR runs on a CPU (loads torch/TRL lazily)."""
