"""Format twins of the real logs whose licence does not let the project ship them.

Three of the six real logs in the shared folder (``eric-haibin-lin/verl-data``,
``yushengsu-thu/verl_training_log``, ``JuncyLu/trl_DAPO``) come from repositories without a
licence, so they stay out of the repository (``tests/data/real-logs/PROVENANCE.md``). What the
tests need from them is their *format*: verl console lines with Ray's coloured worker prefix and
the old key names (``val/test_score/<ds>``), a long plain verl run, and a TRL console log whose
metric dicts are interleaved with tqdm redraws (``\\r`` and ``N/T [``) and with the trainer's own
multi-line summaries. The writers here produce files with those features from a seeded synthetic
run (:func:`satmon.datasets.make_run`), and return the values they wrote, so a test can compare a
reader's output with the truth rather than with a second reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from satmon.datasets import make_run

RAY_PREFIX = "\x1b[2m\x1b[36m(main_task pid=926049)\x1b[0m "


@dataclass(frozen=True)
class Twin:
    path: Path
    format: str
    options: tuple[str, ...]
    # metric -> {step: value as printed}; metrics named as `satmon export` writes them
    truth: dict[str, dict[int, str]]

    def count(self, metric: str) -> int:
        return len(self.truth.get(metric, {}))


def _series(seed: int, steps: int, eval_every: int):
    s = make_run("generalizing", seed=seed, total_steps=steps, eval_every=eval_every)
    train = {int(t): float(v) for t, v in zip(s.run.train_reward.steps, s.run.train_reward.values)}
    (name, held), = s.run.heldout.items()
    heldout = {int(t): float(v) for t, v in zip(held.steps, held.values)}
    return train, heldout


def write_verl_console(path: Path, *, steps: int, eval_every: int, seed: int,
                       old_keys: bool, ray_prefix: bool) -> Twin:
    """A verl console log (``step:N - key:value - ...``), with the quirks of real ones."""
    train, heldout = _series(seed, steps, eval_every)
    val_key = "val/test_score/openai/gsm8k" if old_keys else "val-core/openai/gsm8k/reward/mean@1"
    truth: dict[str, dict[int, str]] = {"train_reward": {}, "heldout_acc": {}, "entropy": {},
                                        "response_length": {}, "kl": {}}
    lines = ["\x1b[36m(main_task pid=926049)\x1b[0m total_training_steps: %d" % steps]
    for step in sorted(train):
        parts = [f"step:{step}"]
        entropy, length, kl = 0.45 - step * 1e-4, 200.0 + step % 17, step * 1e-5
        parts += [f"timing/gen:{20 + step % 3:.3f}", f"critic/kl:{kl:.3f}",
                  f"actor/entropy_loss:{entropy:.3f}", f"critic/score/mean:{train[step]:.3f}",
                  f"response_length/mean:{length:.3f}"]
        truth["train_reward"][step] = f"{train[step]:.3f}"
        truth["entropy"][step] = f"{entropy:.3f}"
        truth["response_length"][step] = f"{length:.3f}"
        truth["kl"][step] = f"{kl:.3f}"
        if step in heldout:
            parts.append(f"{val_key}:{heldout[step]:.3f}")
            truth["heldout_acc"][step] = f"{heldout[step]:.3f}"
        line = " - ".join(parts)
        lines.append((RAY_PREFIX if ray_prefix else "") + line)
        if step % 50 == 0:
            lines.append("\x1b[33m(WorkerDict pid=1)\x1b[0m \x07saving checkpoint\x08")
    path.write_text("\n".join(lines) + "\n")
    return Twin(path, "verl-console", (), truth)


def write_trl_console(path: Path, *, steps: int, seed: int, logging_steps: int = 1) -> Twin:
    """TRL console output: one metric dict per logging step, tqdm redrawn around it."""
    train, _ = _series(seed, steps * logging_steps, eval_every=10)
    truth: dict[str, dict[int, str]] = {"train_reward": {}, "entropy": {}, "response_length": {}}
    total = steps * logging_steps
    out = []
    for i in range(1, steps + 1):
        step = i * logging_steps
        reward = round(train.get(step, train[max(train)]), 4)
        entropy, length = round(0.95 - i * 1e-3, 4), round(50 + i % 7 * 0.35, 2)
        out.append("=" * 60 + "\n")
        out.append(f"   rewards/mc_idx_reward/mean: {reward:.4f}\n   ... and 11 more metrics\n")
        out.append("=" * 60 + "\n")
        out.append("\r" + " " * 53 + "\r")
        out.append("{" + f"'loss': 0.0751, 'grad_norm': 47.75, 'completions/mean_length': "
                   f"{length}, 'rewards/mc_idx_reward/mean': {reward}, 'reward': "
                   f"{reward * 0.9}, 'entropy': {entropy}, 'epoch': {i / steps:.4f}" + "}\n")
        out.append(f"\r  {100 * step // total}%|          | {step}/{total} "
                   f"[01:29<67:59:26,  8.22s/it]MDI(late): 6.339\n")
        truth["train_reward"][step] = repr(reward)
        truth["entropy"][step] = repr(entropy)
        truth["response_length"][step] = repr(length)
    path.write_text("".join(out))
    return Twin(path, "trl-console", ("--train-key", "rewards/mc_idx_reward/mean"), truth)


def write_twins(folder: Path) -> dict[str, Twin]:
    """The three twins, named after the logs they stand in for."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "verl_old_keys_ray_prefix": write_verl_console(
            folder / "twin_verl_old_keys.log", steps=435, eval_every=10, seed=11,
            old_keys=True, ray_prefix=True),
        "verl_long_plain": write_verl_console(
            folder / "twin_verl_long.log", steps=1120, eval_every=10, seed=12,
            old_keys=False, ray_prefix=False),
        "trl_console_tqdm": write_trl_console(folder / "twin_trl_console.md", steps=49, seed=13),
    }
