"""Sequence classification: scikit-learn's handwritten digits read row by row.

Each 8x8 image of ``sklearn.datasets.load_digits`` (1797 images, bundled with
scikit-learn, no download) is read as a sequence of 8 time steps (its rows),
each step 8 features (the pixels of that row), scaled to [0, 1]. A GRU reads
the rows and a linear readout on its last hidden state gives the 10 class
logits:

    rc.Sequential(rc.GRU(8, 64), rc.Linear(64, 10))   # readout="last"

trained with softmax cross-entropy and Adam. A tenth of the training images
is held out as ``validation_data`` (every epoch reports its ``val_loss``);
the test images are touched only once, at the end. The script prints the
test accuracy (argmax of ``model.predict``) and the training time; with the
defaults it reaches 95-98% (by seed) in well under a second on an idle
two-core machine.

Run it from the repository root, after ``pip install ".[examples]"``:

    python examples/digits_classification.py

or, with rnncore built in the source tree and the extras installed:

    PYTHONPATH=src/python python examples/digits_classification.py

With options (all are listed by ``--help``):
    python examples/digits_classification.py --epochs 20 --seed 1 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def load_data(seed: int, test_size: float = 0.25, val_size: float = 0.1):
    """X (N, 8, 8) float32 in [0, 1] (rows as time steps) and y (N,) int64,
    split into train, validation and test with fixed, stratified shuffles:
    returns (X_train, y_train), (X_val, y_val), (X_test, y_test)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install \"rnncore[examples]\" "
                 "(or pip install scikit-learn)")
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)          # (1797, 8, 8): (N, T, F)
    y = digits.target.astype(np.int64)
    X_rest, X_test, y_rest, y_test = train_test_split(X, y, test_size=test_size,
                                                      random_state=seed, stratify=y)
    X_train, X_val, y_train, y_val = train_test_split(X_rest, y_rest, test_size=val_size,
                                                      random_state=seed, stratify=y_rest)
    return (X_train, y_train), (X_val, y_val), (X_test, y_test)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--hidden", type=int, default=64, help="GRU hidden units (default 64)")
    p.add_argument("--batch-size", type=int, default=32, help="minibatch size (default 32)")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, weights and shuffling")
    p.add_argument("--threads", type=int, default=None,
                   help="rnncore threads (default: rnncore's choice; -1 all cores)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress bars")
    args = p.parse_args(argv)

    import rnncore as rc

    if args.threads is not None:
        rc.set_num_threads(args.threads)

    (X_train, y_train), (X_val, y_val), (X_test, y_test) = load_data(args.seed)
    print(f"digits: {len(X_train)} train / {len(X_val)} validation / {len(X_test)} test sequences of "
          f"{X_train.shape[1]} steps x {X_train.shape[2]} features")

    model = rc.Sequential(rc.GRU(8, args.hidden, seed=args.seed),
                          rc.Linear(args.hidden, 10, seed=args.seed))
    t0 = time.perf_counter()
    hist = model.fit(X_train, y_train, loss="cross_entropy", optimizer=rc.optim.Adam(lr=args.lr),
                     epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                     clip_norm=5.0, validation_data=(X_val, y_val), progress=not args.quiet)
    seconds = time.perf_counter() - t0

    pred = model.predict(X_test).argmax(axis=1)
    accuracy = float(np.mean(pred == y_test))
    if hist.epochs:
        print(f"final loss {hist['loss'][-1]:.4f}, val_loss {hist['val_loss'][-1]:.4f}")
    print(f"test accuracy: {accuracy:.4f} ({int(np.sum(pred == y_test))}/{len(y_test)}) "
          f"after {hist.epochs} epochs in {seconds:.1f} s")
    return {"accuracy": accuracy, "seconds": seconds}


if __name__ == "__main__":
    main()
