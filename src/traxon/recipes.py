"""Ready-made networks and training settings for the built-in tasks.

These are the settings the command line (``python -m traxon train``) uses; they are plain
functions so that a user can start from them and change what they need.

Membrane resistance: the LIF/ALIF step is :math:`V_t = V' \\alpha + R I (1 - \\alpha)`. The
recipes set :math:`R = 1 / (1 - \\alpha)` so that a weight of 1 moves the membrane by one
unit per presynaptic spike, the scale e-prop's networks are written in; weights then start
at :math:`\\mathcal{N}(0, 1/n_{in})` and optax's usual learning rates apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optax

from traxon.core import (
    ALIF,
    LIF,
    Dense,
    Expon,
    Network,
    Population,
    Projection,
    Readout,
    Surrogate,
)
from traxon.tasks import Task, get_task

__all__ = [
    "Recipe",
    "evidence_network",
    "recipe",
    "recurrent_network",
    "region_rates",
    "region_rates_learner",
]


def _unit_resistance(tau: float, dt: float) -> float:
    return 1.0 / (1.0 - math.exp(-dt / tau))


def recurrent_network(
    n_in: int,
    n_out: int,
    n_lif: int = 100,
    n_alif: int = 0,
    tau: float = 20.0,
    tau_a: float = 2000.0,
    beta: float | None = None,
    threshold: float = 0.6,
    tau_ref: float = 5.0,
    synapse_tau: float | None = None,
    readout_tau: float | None = 20.0,
    recurrent: bool = True,
    input_gain: float = 1.0,
    recurrent_gain: float = 0.7,
    dt: float = 1.0,
) -> Network:
    """A recurrent network of LIF and/or ALIF neurons with a leaky readout.

    Every population receives the input and (with ``recurrent=True``) every population's
    spikes of the previous step; the readout reads all populations' spikes.

    Example:
        >>> from traxon.recipes import recurrent_network
        >>> net = recurrent_network(40, 2, n_lif=10, n_alif=10)
        >>> sorted(net.populations)
        ['alif', 'lif', 'readout']
    """
    spike = Surrogate("triangle", width=1.0, scale=0.3)
    R = _unit_resistance(tau, dt)
    if beta is None:
        # e-prop's scaling: the threshold shift a steady rate produces is the same whatever
        # tau_a, about 1.7 thresholds at one spike per membrane time constant.
        beta = 1.7 * (1 - math.exp(-dt / tau_a)) / (1 - math.exp(-dt / tau))
    membrane: dict[str, Any] = {
        "tau": tau,
        "V_th": threshold,
        "R": R,
        "tau_ref": tau_ref,
        "spike_fn": spike,
    }
    pops: dict[str, Population] = {}
    if n_lif:
        pops["lif"] = Population(LIF(**membrane), n_lif)
    if n_alif:
        pops["alif"] = Population(ALIF(tau_a=tau_a, beta=beta, **membrane), n_alif)
    if not pops:
        raise ValueError("the network needs at least one neuron: n_lif + n_alif > 0.")
    synapse = Expon(synapse_tau) if synapse_tau else None
    projections = []
    for post in pops:
        projections.append(Projection("x", post, Dense(gain=input_gain), synapse=synapse))
        if recurrent:
            for pre in pops:
                projections.append(
                    Projection(pre, post, Dense(gain=recurrent_gain), synapse=synapse, delay=1)
                )
    return Network(
        n_in, pops, projections, readout=Readout(tuple(pops), n_out, tau=readout_tau), dt=dt
    )


def evidence_network(n_in: int = 40, n_lif: int = 50, n_alif: int = 50) -> Network:
    """The e-prop evidence-accumulation network: 50 LIF + 50 ALIF (adaptation 2 s).

    Example:
        >>> from traxon.recipes import evidence_network
        >>> evidence_network().populations["alif"].size
        50
    """
    return recurrent_network(n_in, 2, n_lif=n_lif, n_alif=n_alif)


@dataclass
class Recipe:
    """A task, its network and training settings (what ``traxon train`` runs)."""

    task: Task
    network: Network
    algorithm: str
    learning_rate: float
    batch_size: int
    iterations: int
    update_every: int | str = "sequence"
    rate_target: float | None = 10.0
    rate_reg: float = 1.0
    clip_norm: float | None = None
    lr_decay_steps: int | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def optimizer(self, learning_rate: float | None = None) -> optax.GradientTransformation:
        """Adam at ``learning_rate`` (default: the recipe's); with ``lr_decay_steps`` the
        rate follows a cosine from it down to a tenth over that many updates, then stays
        there. (Gradient clipping, ``clip_norm``, is the learner's own option.)

        Example:
            >>> from traxon.recipes import recipe
            >>> r = recipe("evidence", quick=True)
            >>> r.clip_norm, r.lr_decay_steps
            (1.0, 150)
            >>> opt = r.optimizer(1e-2)
        """
        lr = self.learning_rate if learning_rate is None else learning_rate
        if self.lr_decay_steps is None:
            return optax.adam(lr)
        return optax.adam(optax.cosine_decay_schedule(lr, self.lr_decay_steps, alpha=0.1))


#: The short tasks of ``recipe(..., quick=True)`` (options given to ``recipe`` override them).
_QUICK_OPTIONS: dict[str, dict[str, Any]] = {
    "evidence": {"n_cues": 3, "cue_ms": 30, "gap_ms": 20, "delay_ms": 60, "recall_ms": 40},
    "dms": {"fixation_ms": 20, "sample_ms": 50, "delay_ms": 100, "test_ms": 50},
    "digits": {"n_steps": 20},
}


def recipe(
    task: str, algorithm: str | None = None, quick: bool = False, **task_options: Any
) -> Recipe:
    """The default recipe for a built-in task (``quick=True``: a short version for smoke
    tests, seconds on a CPU).

    Example:
        >>> from traxon.recipes import recipe
        >>> r = recipe("evidence", quick=True)
        >>> r.task.n_steps < 500, r.algorithm
        (True, 'd_rtrl')
    """
    if quick and isinstance(task, str):
        task_options = {**_QUICK_OPTIONS.get(task, {}), **task_options}
    if task == "evidence":
        t = get_task("evidence", **task_options)
        algorithm = algorithm or "d_rtrl"
        return Recipe(
            t,
            evidence_network(t.n_in),
            algorithm,
            # ES-D-RTRL's gradient is approximate: at 5e-3 its test accuracy peaks early and
            # drifts down (0.86 -> 0.76 in 5 min); 2e-3 holds 0.80-0.86.
            2e-3 if algorithm == "es_d_rtrl" else 5e-3,
            32,
            20 if quick else 2000,
            # Its test accuracy could dip by a third between two evaluations and recover: each
            # gradient is clipped to norm 1 (Adam then weighs every batch alike, an outlier
            # batch no more than the others) and the rate decays to a tenth over about the
            # batches of a 300-s run.
            clip_norm=1.0,
            lr_decay_steps=150,
            notes="50 LIF + 50 ALIF (tau_a = 2 s), leaky readout, rate regularised to 10 Hz; "
            "gradients clipped to norm 1, cosine learning-rate decay to a tenth over 150 updates",
        )
    if task == "dms":
        t = get_task("dms", **task_options)
        return Recipe(
            t,
            recurrent_network(t.n_in, 2, n_lif=50, n_alif=50),
            algorithm or "d_rtrl",
            5e-3,
            32,
            20 if quick else 2000,
        )
    if task == "digits":
        t = get_task("digits", **task_options)
        net = recurrent_network(
            t.n_in,
            t.n_out,
            n_lif=100,
            recurrent=False,
            synapse_tau=5.0,
            readout_tau=10.0,
            input_gain=2.0,
        )
        return Recipe(
            t,
            net,
            algorithm or "es_d_rtrl",
            2e-3,
            32,
            20 if quick else 600,
            rate_target=None,
        )
    if task == "shd":
        t = get_task("shd", **task_options)
        net = recurrent_network(
            t.n_in, t.n_out, n_lif=128, synapse_tau=5.0, readout_tau=20.0, input_gain=2.0
        )
        return Recipe(t, net, algorithm or "es_d_rtrl", 1e-3, 32, 20 if quick else 3000)
    raise ValueError(f"`task` must be one of 'evidence', 'dms', 'digits', 'shd'; got {task!r}.")


# --------------------------------------------------------------------------------------
# Region rates on a connectome (examples/whole_brain.py, benchmarks/whole_brain.py).

#: The measured region-rate recipe (docs/scaling.md): mean stimulus rate (Hz), drift time
#: of the stimulus (ms), peak learning rate of ``es_d_rtrl`` and of the BPTT reference.
REGION_INPUT_RATE, REGION_SMOOTH_MS, REGION_LR, REGION_BPTT_LR = 400.0, 300.0, 2e-3, 1e-2


def region_rates(n_regions: int, n_in: int, n_steps: int, window: int, burn_in: int) -> Any:
    """The region-rate task of the recipe: a 0-800 Hz stimulus drifting over 300 ms.

    Example:
        >>> from traxon.recipes import region_rates
        >>> task = region_rates(n_regions=4, n_in=8, n_steps=100, window=50, burn_in=50)
        >>> task.input_rate, task.n_out
        (400.0, 4)
    """
    from traxon.tasks import RegionRates

    return RegionRates(
        n_regions=n_regions,
        n_in=n_in,
        n_steps=n_steps,
        window=window,
        input_rate=REGION_INPUT_RATE,
        smooth_ms=REGION_SMOOTH_MS,
        burn_in=burn_in,
    )


def region_rates_learner(
    net: Network, rounds: int, n_steps: int, lr: float = REGION_LR, bptt: bool = False
) -> Any:
    """The recipe's learner on a connectome network, over ``rounds`` sequences of ``n_steps``.

    ``es_d_rtrl`` with the membrane's decay (20 ms), Adam with a cosine-decayed rate
    updated every step; with ``bptt=True`` the reference instead: BPTT through each whole
    sequence, one update per sequence, at ``REGION_BPTT_LR`` (``lr`` is then ignored).
    """
    from traxon.learn import online_learner
    from traxon.tasks import region_rate_loss

    if bptt:
        return online_learner(
            net,
            "bptt",
            optax.adam(optax.cosine_decay_schedule(REGION_BPTT_LR, rounds, alpha=0.05)),
            loss=region_rate_loss(),
            update_every="sequence",
            sequence_length=n_steps,
        )
    from traxon.trace import es_d_rtrl

    schedule = optax.cosine_decay_schedule(lr, rounds * n_steps, alpha=0.05)
    algo = es_d_rtrl(decay=math.exp(-1.0 / 20.0))  # the membrane leak
    return online_learner(net, algo, optax.adam(schedule), loss=region_rate_loss())
