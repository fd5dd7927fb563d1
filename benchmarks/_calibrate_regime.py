"""Fit the regime model's coefficients (satmon.regime.REGIME_COEFFICIENTS) on a synthetic suite.

    python benchmarks/_calibrate_regime.py

Uses suites with seed 100 (disjoint from the benchmark's seeds 0-2): standard and hard mixes,
evaluation every 10 or 25 steps, snapshots after 6, 8, 10, 15, 20, 30 and 40 held-out
evaluations. Fits a multinomial logistic regression (memorizing = reference class, small L2
penalty) by maximum likelihood and prints the coefficients to paste into satmon/regime.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from satmon.datasets import make_suite  # noqa: E402
from satmon.regime import CLASSES, FEATURES, regime_features  # noqa: E402


def snapshots(n_runs: int = 240):
    X, y = [], []
    for mix in ("standard", "hard"):
        for every in (10, 25):
            for sr in make_suite(n_runs, seed=100, mix=mix, eval_every=every):
                h = sr.run.heldout["heldout"]
                tr = sr.run.train_reward
                for k in (6, 8, 10, 15, 20, 30, 40):
                    if len(h) < k:
                        continue
                    m = tr.steps <= h.steps[k - 1]
                    f = regime_features(h.steps[:k], h.values[:k], [h.sample_size] * k,
                                        train_steps=tr.steps[m], train_values=tr.values[m])
                    X.append([1.0] + [f[name] for name in FEATURES])
                    y.append(CLASSES.index(sr.truth.label))
    return np.asarray(X), np.asarray(y)


def fit(X, y, l2=1e-2):
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
    return unpack(res.x), res


def main() -> int:
    X, y = snapshots()
    W, res = fit(X, y)
    print(f"# {y.size} snapshots, final NLL {res.fun:.4f}")
    print("REGIME_COEFFICIENTS: dict[str, tuple[float, ...]] = {")
    for c, row in zip(CLASSES, W):
        print(f'    "{c}": ({", ".join(f"{v:.4f}" for v in row)}),')
    print("}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
