"""Fit the regime model (satmon/regime_model.json) on a synthetic calibration suite.

    python benchmarks/_calibrate_regime.py            # rewrites satmon/regime_model.json
    python benchmarks/_calibrate_regime.py --dry-run  # prints, writes nothing

Calibration suites use seeds 100-102 (the benchmark uses 0-2). Two kinds of snapshot, matching
the two ways the benchmark reads the regime call:

* prefix calls: runs evaluated every 10 or 25 steps, called after 6, 8, 10, 15, 20, 30 and 40
  evaluations (seed 100);
* end-of-run calls: runs whose 500-step budget holds about 10, 20 or 40 evaluations (evaluation
  every 50, 25 or 12 steps), called at the last step (seed 101);

each on the standard and the hard mix. A multinomial logistic regression (memorizing = reference
class, small L2 penalty) is fitted by maximum likelihood on seeds 100-101; a temperature is then
fitted by likelihood on a separate suite (seed 102, same design) as ``exp(a + b * elapsed)``
(see satmon.regime), and the data file is rewritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from satmon.datasets import make_suite  # noqa: E402
from satmon.regime import CLASSES, FEATURES, regime_features  # noqa: E402

PREFIX_POINTS = (6, 8, 10, 15, 20, 30, 40)
END_EVERY = (50, 25, 12)


def _row(sr, k):
    h = sr.run.heldout["heldout"]
    tr = sr.run.train_reward
    m = tr.steps <= h.steps[k - 1]
    f = regime_features(h.steps[:k], h.values[:k], [h.sample_size] * k,
                        train_steps=tr.steps[m], train_values=tr.values[m],
                        total_steps=sr.run.last_step)
    return [1.0] + [f[name] for name in FEATURES], CLASSES.index(sr.truth.label)


def snapshots(n_runs: int, seed_prefix: int, seed_end: int):
    X, y = [], []
    for mix in ("standard", "hard"):
        for every in (10, 25):
            for sr in make_suite(n_runs, seed=seed_prefix, mix=mix, eval_every=every):
                for k in PREFIX_POINTS:
                    if len(sr.run.heldout["heldout"]) >= k:
                        r, c = _row(sr, k)
                        X.append(r)
                        y.append(c)
        for every in END_EVERY:
            for sr in make_suite(n_runs, seed=seed_end, mix=mix, eval_every=every):
                r, c = _row(sr, len(sr.run.heldout["heldout"]))
                X.append(r)
                y.append(c)
    return np.asarray(X), np.asarray(y)


def fit(X, y, l2=1e-3):
    k, d = len(CLASSES), X.shape[1]
    ref = CLASSES.index("memorizing")
    free = [c for c in range(k) if c != ref]

    def unpack(w):
        W = np.zeros((k, d))
        W[free] = w.reshape(len(free), d)
        return W

    def loss(w):
        W = unpack(w)
        s = X @ W.T
        s -= s.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        onehot = np.eye(k)[y]
        nll = -np.mean(logp[np.arange(y.size), y]) + l2 * np.sum(w ** 2)
        grad = ((p - onehot).T @ X) / y.size
        return nll, grad[free].ravel() + 2 * l2 * w

    res = minimize(loss, np.zeros(len(free) * d), jac=True, method="L-BFGS-B")
    return unpack(res.x), res.fun


def nll(W, X, y, ab=(0.0, 0.0)):
    temp = np.exp(ab[0] + ab[1] * X[:, 1 + FEATURES.index("elapsed")])[:, None]
    s = X @ W.T / temp
    s -= s.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(y.size), y]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=240, help="runs per suite configuration")
    ap.add_argument("--dry-run", action="store_true", help="print, do not write the file")
    args = ap.parse_args(argv)
    X, y = snapshots(args.runs, 100, 101)
    W, fun = fit(X, y)
    Xv, yv = snapshots(max(args.runs // 2, 30), 102, 102)
    ab = minimize(lambda v: nll(W, Xv, yv, v), np.zeros(2), method="Nelder-Mead").x
    temp = (float(ab[0]), float(ab[1]))
    print(f"# {y.size} fitting snapshots (penalised NLL {fun:.4f}); temperature "
          f"exp({temp[0]:.3f} + {temp[1]:.3f} elapsed) "
          f"on {yv.size} validation snapshots (NLL {nll(W, Xv, yv):.4f} -> "
          f"{nll(W, Xv, yv, temp):.4f})")
    data = {"fields": list(FEATURES), "classes": list(CLASSES),
            "coefficients": {c: [round(float(v), 5) for v in row] for c, row in zip(CLASSES, W)},
            "temperature": [round(temp[0], 5), round(temp[1], 5)],
            "provenance": {"script": "benchmarks/_calibrate_regime.py",
                           "command": "python benchmarks/_calibrate_regime.py"
                           + (f" --runs {args.runs}" if args.runs != 240 else ""),
                           "note": f"{y.size} fitting snapshots (seeds 100-101), temperature "
                                   f"fitted on {yv.size} snapshots (seed 102); coefficients are "
                                   "(intercept, *weights in 'fields' order) per class, "
                                   "memorizing the reference class"}}
    text = json.dumps(data, indent=2) + "\n"
    print(text)
    if not args.dry_run:
        (REPO / "satmon" / "regime_model.json").write_text(text)
        print(f"wrote {REPO / 'satmon' / 'regime_model.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
