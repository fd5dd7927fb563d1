"""Trainer adapters (``satmon.callbacks``): thin translations of trainer events to the core.

* :class:`SaturationCallback` - a transformers ``TrainerCallback`` (works with TRL's
  ``GRPOTrainer`` and a plain ``Trainer``) that feeds :class:`satmon.monitor.SaturationMonitor`,
  flags or halts, survives checkpoints and logs to MLflow.
* :class:`HeldoutEvaluator` - greedy held-out accuracy with a user verifier, split across
  processes.

Importing this package needs transformers (``pip install 'satmon[hf]'``).
"""

from satmon.callbacks.heldout import HeldoutEvaluator, HeldoutResult
from satmon.callbacks.saturation import ACTIONS, HELDOUT_SOURCES, SaturationCallback

__all__ = ["ACTIONS", "HELDOUT_SOURCES", "HeldoutEvaluator", "HeldoutResult",
           "SaturationCallback"]
