#!/usr/bin/env python3
"""Fixtures for cromo's evaluation tests (tests/eval_*.rs), from independent references.

Run from the repository root (numpy and scikit-learn 1.9; shared data beside the repository):

    /work/pyenv/bin/python tools/gen_eval_fixtures.py ../shared/data/digits.csv.gz tests/fixtures/eval

Writes:
  digits_probe.json  a fixed train/test split of the UCI 8x8 digits (1,797 x 64, label last column),
                     scikit-learn's StandardScaler + LogisticRegression (lbfgs, multinomial) fitted on
                     the train part: its C, its objective per training sample
                     (mean CE + ||W||^2 / (2 C N), the same minimiser as sklearn's C*sum CE + 1/2 ||W||^2),
                     its weights and its train/test accuracy.
  coding_rate.json   random feature matrices with their coding rate R, R_c and Delta R computed in
                     float64 with numpy.linalg.slogdet on the d x d forms of UMM's formulas
                     (R(Z) = 1/2 logdet(I + d/(m eps^2) Z Z^T), groups = the two views of one sample),
                     with and without row L2 normalisation, and a (B,C,H,W) feature map whose
                     global-average-pooled channels give the quoted values.
Nothing here is needed at run time or by the tests themselves.
"""
import gzip
import json
import sys

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def digits_fixture(csv_gz):
    with gzip.open(csv_gz, "rt") as f:
        rows = np.loadtxt(f, delimiter=",")
    x = rows[:, :-1].astype(np.float64)
    y = rows[:, -1].astype(np.int64)
    assert x.shape == (1797, 64), x.shape
    rng = np.random.default_rng(20240)
    perm = rng.permutation(len(y))
    test_idx = np.sort(perm[:597])
    train_idx = np.sort(perm[597:])
    c = 0.1
    scaler = StandardScaler().fit(x[train_idx])
    xtr = scaler.transform(x[train_idx])
    xte = scaler.transform(x[test_idx])
    clf = LogisticRegression(C=c, max_iter=100000, tol=1e-12).fit(xtr, y[train_idx])
    assert clf.n_iter_[0] < 100000, "sklearn did not converge"
    w, b = clf.coef_, clf.intercept_
    logits = xtr @ w.T + b
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    ce = lse - logits[np.arange(len(train_idx)), y[train_idx]]
    n = len(train_idx)
    objective = ce.mean() + (w ** 2).sum() / (2 * c * n)
    return {
        "source": "digits.csv.gz (UCI 8x8 digits, from scikit-learn)",
        "sklearn_version": sklearn.__version__,
        "model": "StandardScaler + LogisticRegression(C, lbfgs, multinomial, tol=1e-12)",
        "C": c,
        "lambda": 1.0 / (c * n),
        "train_idx": train_idx.tolist(),
        "test_idx": test_idx.tolist(),
        "objective": float(objective),
        "train_accuracy": float(clf.score(xtr, y[train_idx])),
        "test_accuracy": float(clf.score(xte, y[test_idx])),
        "classes": clf.classes_.tolist(),
        "weight": w.tolist(),
        "bias": b.tolist(),
        "n_iter": int(clf.n_iter_[0]),
    }


def logdet(a):
    sign, val = np.linalg.slogdet(a)
    assert sign > 0
    return val


def rates(z1, z2, eps, normalize):
    """z1, z2: (n, d) two views of n samples; returns R, R_c, Delta R over Z = [z1; z2] (m = 2n)."""
    z = np.concatenate([z1, z2], 0).astype(np.float64)
    if normalize:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    m, d = z.shape
    zt = z.T  # d x m, columns are samples as in the paper
    r = 0.5 * logdet(np.eye(d) + d / (m * eps ** 2) * zt @ zt.T)
    n = m // 2
    rc = 0.0
    for j in range(n):
        pi = np.zeros(m)
        pi[j] = 1.0
        pi[n + j] = 1.0
        tr = pi.sum()
        rc += tr / (2 * m) * logdet(np.eye(d) + d / (tr * eps ** 2) * (zt * pi) @ zt.T)
    return {"r": r, "rc": rc, "delta": r - rc}


def coding_rate_fixture():
    rng = np.random.default_rng(7)
    cases = []
    for name, n, d in [("tall_m_gt_d", 20, 16), ("wide_d_gt_m", 12, 96)]:
        base = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
        z1 = (base + 0.2 * rng.normal(size=(n, d))).astype(np.float32)
        z2 = (base + 0.2 * rng.normal(size=(n, d))).astype(np.float32)
        cases.append({
            "name": name, "n": n, "d": d, "eps": 0.1,
            "z1": z1.flatten().tolist(), "z2": z2.flatten().tolist(),
            "raw": rates(z1, z2, 0.1, False),
            "normalized": rates(z1, z2, 0.1, True),
        })
    # An early-layer feature map (B, C, H, W) for each view; the monitor pools it over H, W.
    b, c, h, w = 10, 8, 5, 3
    fmap1 = rng.normal(size=(b, c, h, w)).astype(np.float32) + rng.normal(size=(b, c, 1, 1)).astype(np.float32)
    fmap2 = (fmap1 + 0.3 * rng.normal(size=(b, c, h, w))).astype(np.float32)
    p1 = fmap1.astype(np.float64).mean(axis=(2, 3))
    p2 = fmap2.astype(np.float64).mean(axis=(2, 3))
    fmap = {
        "shape": [b, c, h, w], "eps": 0.1,
        "x1": fmap1.flatten().tolist(), "x2": fmap2.flatten().tolist(),
        "pooled_normalized": rates(p1, p2, 0.1, True),
    }
    return {"numpy_version": np.__version__, "cases": cases, "feature_map": fmap}


def main():
    csv_gz, out = sys.argv[1], sys.argv[2]
    with open(f"{out}/digits_probe.json", "w") as f:
        json.dump(digits_fixture(csv_gz), f)
    with open(f"{out}/coding_rate.json", "w") as f:
        json.dump(coding_rate_fixture(), f)


if __name__ == "__main__":
    main()
