"""Fit the rational tanh of src/cpp/rnncore/simd/tanh_rational.hpp.

    python tools/fit_tanh.py [clamp] [numerator terms] [denominator terms]

tanh(x)/x is even and smooth, so it is fitted as P(v)/Q(v) in v = (x/clamp)^2
on (0, clamp], minimising the largest relative error: a linearised least
squares problem (P - g Q = 0, scaled by the previous Q and by g) solved by SVD
in Chebyshev bases, with Lawson's reweighting towards the minimax solution.
Prints the coefficients as polynomials in u = x^2 with Q(0) = 1, and the
largest relative error in double precision. (How the float evaluation rounds
is another matter: tests/test_activations.py checks the kernels.)
"""
from __future__ import annotations

import sys

import numpy as np
from numpy.polynomial import chebyshev as cheb
from numpy.polynomial import polynomial as poly


def fit(clamp=9.0, n_p=7, n_q=4, iterations=200):
    x = np.concatenate([np.linspace(1e-6, 1, 40_000), np.linspace(1, clamp, 80_000)])
    g = np.tanh(x) / x
    z = 2 * (x / clamp) ** 2 - 1  # v in [0, 1] -> z in [-1, 1]
    tp, tq = cheb.chebvander(z, n_p - 1), cheb.chebvander(z, n_q - 1)
    w, q_prev = np.ones_like(x), np.ones_like(x)
    best = (np.inf, None, None)
    for _ in range(iterations):
        s = w / (q_prev * g)
        m = np.hstack([tp * s[:, None], -(g * s)[:, None] * tq])
        sol = np.linalg.svd(m, full_matrices=False)[2][-1]
        p, q = sol[:n_p], sol[n_p:]
        if (tq @ q).mean() < 0:
            p, q = -p, -q
        pv, qv = tp @ p, tq @ q
        if np.any(qv <= 0):
            break  # a pole in range: keep the best so far
        err = pv / qv / g - 1
        worst = np.abs(err).max()
        if worst < best[0]:
            best = (worst, p.copy(), q.copy())
        q_prev = qv
        w = w * (np.abs(err) + 1e-3 * worst)
        w /= w.sum()
    _, p, q = best

    def in_u(c):  # Chebyshev series in z = (2/clamp^2) u - 1 -> power series in u
        out = np.zeros(len(c))
        for k, ck in enumerate(cheb.cheb2poly(c)):
            out[:k + 1] += ck * poly.polypow([-1.0, 2 / clamp**2], k)
        return out

    pu, qu = in_u(p), in_u(q)
    pu, qu = pu / qu[0], qu / qu[0]
    xs = np.linspace(1e-6, clamp, 1_000_000)
    rel = xs * poly.polyval(xs * xs, pu) / poly.polyval(xs * xs, qu) / np.tanh(xs) - 1
    return pu, qu, float(np.abs(rel).max())


if __name__ == "__main__":
    args = sys.argv[1:]
    pu, qu, err = fit(float(args[0]) if args else 9.0, *(int(a) for a in args[1:3]))
    print("P:", ", ".join(f"{c:.9e}" for c in pu))
    print("Q:", ", ".join(f"{c:.9e}" for c in qu))
    print(f"largest relative error (double): {err:.3g}")
