"""``satmon watch``: monitor and safely halt runs satmon does not run inside.

verl has no callbacks and no early stopping; OpenRLHF, and any job logging to MLflow or
TensorBoard, can still be watched from outside. The watcher follows each run's log as it is
written and feeds :class:`satmon.monitor.SaturationMonitor` incrementally - the same engine and
decisions as the trainer callback - then, on HALT, waits for the first checkpoint at or after
the halt step and stops the job through the user's stop action, exactly once.

Modules (each docstring is the documentation of its part):

``followers``    incremental readers: verl JSONL, verl/TRL console, MLflow run, TensorBoard
                 folder; file replacement, truncation, partial lines, a store that is down;
``metric_keys``  key resolution through :class:`satmon.keys.KeyMap` (OpenRLHF's keys are its
                 ``openrlhf`` preset), plus transformers' TensorBoard tags;
``halting``      checkpoints (verl ``global_step_N/`` + ``latest_checkpointed_iteration.txt``,
                 transformers ``checkpoint-N/``) and stop actions (stop file, command, signal);
``watcher``      the loop, run states, state file, decision log, output, exit status;
``commands``     the ``satmon watch`` command line.

Example (command line)::

    satmon watch $VERL_FILE_LOGGER_PATH --checkpoint-dir ckpts/ --heldout-n gsm8k=1319 \\
        --on-halt 'ray job stop $RAY_JOB_ID' --out watch-report/
"""

from satmon.watch.watcher import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_FINISHED, EXIT_HALTED,
                                  EXIT_WATCHING)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_FINISHED", "EXIT_HALTED", "EXIT_WATCHING"]
