"""A brainpy.state network, written as brainpy.state's documentation writes it, learning online.

The network is plain brainpy.state: recurrent LIF neurons with exponential AlignPost
synapses (``AlignPostProj`` + ``Expon`` + ``CUBA``) and a ``LeakyRateReadout``. traxon does
not change a line of it: ``traxon.online_learner(module)`` reads the step (and the number
of input channels, from the first layer), finds the weights, the populations and the
readout, and trains the module's own ``ParamState`` objects while it runs (with
eligibility traces, constant memory in time).

The task: which of two groups of input channels fires more? The answer is asked during the
last third of each 100 ms sequence. It prints the test accuracy before and after learning.

Run:  python examples/brainpy_state_online.py            (about a minute on a laptop CPU)
      python examples/brainpy_state_online.py --quick    (seconds)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import brainevent
import brainpy.state as bps
import brainstate
import braintools
import brainunit as u
import numpy as np
import optax

import traxon

N_IN, N_REC = 20, 40


class RecurrentSNN(brainstate.nn.Module):
    """Recurrent LIF + Expon AlignPost synapses + LeakyRateReadout, in plain brainpy.state."""

    def __init__(self, n_in: int = N_IN, n_rec: int = N_REC, n_out: int = 2) -> None:
        super().__init__()
        self.neu = bps.LIF(
            n_rec,
            tau=20 * u.ms,
            V_th=1 * u.mV,
            V_reset=0 * u.mV,
            V_rest=0 * u.mV,
            spk_fun=braintools.surrogate.ReluGrad(alpha=0.3, width=1.0),
        )
        self.inp = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_in,
                n_rec,
                w_init=braintools.init.KaimingNormal(scale=40.0, unit=u.mS),
                b_init=None,
            ),
            syn=bps.Expon.desc(n_rec, tau=5 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.rec = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_rec,
                n_rec,
                w_init=braintools.init.KaimingNormal(scale=5.0, unit=u.mS),
                b_init=None,
            ),
            syn=bps.Expon.desc(n_rec, tau=5 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.out = bps.LeakyRateReadout(n_rec, n_out, tau=20 * u.ms)

    def update(self, x):
        spikes = self.neu.get_spike()
        self.inp(x)
        self.rec(spikes)
        self.neu()
        return self.out(self.neu.get_spike())


def batch(rng: np.random.Generator, size: int, steps: int):
    """Spike trains where one half of the channels fires at 40 Hz, the other at 5 Hz."""
    label = rng.integers(0, 2, size)
    high = np.repeat(np.arange(2), N_IN // 2)[None] == label[:, None]
    rates = np.where(high, 0.04, 0.005)
    x = (rng.random((steps, size, N_IN)) < rates[None]).astype(np.float32)
    y = np.broadcast_to(label, (steps, size)).astype(np.int32)
    mask = np.zeros((steps, size), np.float32)
    mask[-steps // 3 :] = 1.0
    return x, y, mask


def attach_learner(module: brainstate.nn.Module, **options: Any) -> traxon.OnlineLearner:
    """ES-D-RTRL with Adam on the module's weights: cross-entropy of the readout, one update
    at the end of each sequence, a 10 Hz firing-rate target."""
    return traxon.online_learner(
        module,
        "es_d_rtrl",
        optax.adam(5e-3),
        "cross_entropy",
        update_every="sequence",
        rate_target=10.0,
        **options,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sequences", type=int, default=None)
    args = parser.parse_args()
    brainevent.config.set_backend("cpu", "jax_raw")
    brainstate.environ.set(dt=1.0 * u.ms)
    steps, size = (40, 8) if args.quick else (100, 32)
    sequences = args.sequences or (5 if args.quick else 60)

    module = RecurrentSNN()  # no init_all_states, no input_size: traxon reads them
    learner = attach_learner(module)
    print("adapted:", {k: p.traced for k, p in learner.net.populations.items()})
    print("weights:", [p.name for p in learner.net.projections])
    rng = np.random.default_rng(0)
    test = batch(np.random.default_rng(1), size, steps)
    learner.init_state(size)
    before = learner.evaluate(learner.state, *test)["accuracy"]
    start = time.perf_counter()
    learner.fit((batch(rng, size, steps) for _ in range(sequences)), n_batches=sequences)
    after = learner.evaluate(learner.state, *test)["accuracy"]
    print(
        f"test accuracy {before:.2f} -> {after:.2f} after {sequences} sequences "
        f"({time.perf_counter() - start:.0f} s)"
    )
    # The module itself now holds the trained weights, with their units.
    print("module input weight now:", module.inp.comm.weight.value["weight"].shape)


if __name__ == "__main__":
    main()
