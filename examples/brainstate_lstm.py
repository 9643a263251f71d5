"""A brainstate LSTM, written as brainstate's users write it, learning to remember a cue.

The network is plain brainstate: ``brainstate.nn.LSTMCell`` read by a ``brainstate.nn.Linear``
at every step (``self.out(self.rnn(x))``). traxon does not change a line of it:
``traxon.online_learner(module)`` splits the cell's one weight on ``concatenate([x, h])``
into its gate blocks, takes the ``Linear`` as an instantaneous readout, trains the module's
own ``ParamState`` objects and writes them back.

The task: one of two groups of input channels fires for the first 5 steps (the cue), then
every channel fires at random for ``--delay`` steps; in the last 5 steps the network must
say which group it was. It prints the held-out accuracy of BPTT and of three online rules
(``es_d_rtrl``, ``d_rtrl``, ``snap``) beside chance, the majority class and the untrained
network.

What a run on a 2-core CPU printed: with the default 20-step delay BPTT, ``d_rtrl`` and
``snap`` reach 1.00 and ``es_d_rtrl`` stays at chance (0.51): its presynaptic traces decay
at a fixed rate per state, while an LSTM holds its memory in a forget gate that the weights
set. With ``--delay 10`` all four reach 0.99-1.00. With ``--delay 50 --sequences 300`` none
learns it, BPTT included.

Run:  python examples/brainstate_lstm.py               (under a minute on a laptop CPU)
      python examples/brainstate_lstm.py --delay 10
      python examples/brainstate_lstm.py --quick       (seconds)
"""

from __future__ import annotations

import argparse
import time

import brainstate
import brainunit as u
import numpy as np
import optax

import traxon

N_IN, N_HIDDEN, CUE, ANSWER = 8, 32, 5, 5


class LSTMClassifier(brainstate.nn.Module):
    """An LSTM cell read by a Linear at every step, in plain brainstate."""

    def __init__(self, n_in: int = N_IN, n_hidden: int = N_HIDDEN, n_out: int = 2) -> None:
        super().__init__()
        self.rnn = brainstate.nn.LSTMCell(n_in, n_hidden)
        self.out = brainstate.nn.Linear(n_hidden, n_out)

    def update(self, x):
        return self.out(self.rnn(x))


def batch(rng: np.random.Generator, size: int, delay: int):
    """``(x, y, mask)``: time-major inputs ``(T, size, N_IN)``, the cued group at every step,
    and a mask that asks for it during the last ``ANSWER`` steps only."""
    steps = CUE + delay + ANSWER
    label = rng.integers(0, 2, size)
    x = (rng.random((steps, size, N_IN)) < 0.05).astype(np.float32)  # background firing
    cued = np.repeat(np.arange(2), N_IN // 2)[None] == label[:, None]  # (size, N_IN)
    x[:CUE] = np.maximum(x[:CUE], (rng.random((CUE, size, N_IN)) < 0.8) * cued[None])
    y = np.broadcast_to(label, (steps, size)).astype(np.int32)
    mask = np.zeros((steps, size), np.float32)
    mask[-ANSWER:] = 1.0
    return x, y, mask


def train(algorithm: str, delay: int, sequences: int, size: int, test: tuple) -> tuple:
    """A fresh module (seed 0) trained by ``algorithm``, one update per sequence; returns
    (held-out accuracy before, after, seconds)."""
    brainstate.random.seed(0)
    module = LSTMClassifier()
    learner = traxon.online_learner(
        module,
        algorithm,
        optax.adam(1e-2),
        update_every="sequence",
        sequence_length=CUE + delay + ANSWER,
    )
    learner.init_state(size)
    before = learner.evaluate(learner.state, *test)["accuracy"]
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    learner.fit((batch(rng, size, delay) for _ in range(sequences)), n_batches=sequences)
    after = learner.evaluate(learner.state, *test)["accuracy"]
    return before, after, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--delay", type=int, default=20, help="steps between cue and answer")
    parser.add_argument("--sequences", type=int, default=None, help="training batches")
    parser.add_argument("--algorithms", nargs="*", default=["bptt", "es_d_rtrl", "d_rtrl", "snap"])
    args = parser.parse_args()
    brainstate.environ.set(dt=1.0 * u.ms)
    size = 8 if args.quick else 32
    sequences = args.sequences or (3 if args.quick else 150)
    test = batch(np.random.default_rng(2), 64 if args.quick else 512, args.delay)
    label = test[1][-1]
    majority = max(np.mean(label == 0), np.mean(label == 1))
    print(
        f"cue recall after {args.delay} steps; {sequences} batches of {size}; held-out "
        f"{label.size} sequences: chance 0.50, majority class {majority:.2f}"
    )
    for algorithm in args.algorithms:
        before, after, seconds = train(algorithm, args.delay, sequences, size, test)
        print(
            f"{algorithm:>10}: held-out accuracy {before:.2f} (untrained) -> {after:.2f} "
            f"({seconds:.0f} s)"
        )


if __name__ == "__main__":
    main()
