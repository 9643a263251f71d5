"""Write the example notebooks (without outputs) from the cells below.

The notebooks are generated so that they stay reproducible and reviewable: edit this file
(code that an example script defines is read from that script, see ``example_source``),
then run::

    python examples/notebooks/build.py

Each notebook reads ``QUICK`` from the environment variable ``TRAXON_QUICK=1`` and then
uses tiny settings (the tests execute them that way); without it they run the full
versions. Execute one with::

    jupyter execute --output=executed examples/notebooks/quickstart.ipynb
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent


def example_source(name: str, script: str = "brainpy_state_online.py") -> str:
    """The source of the top-level class or function ``name`` of an example script, as
    written there: a notebook shows the example's own code instead of a copy of it."""
    source = (EXAMPLES / script).read_text()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            segment = ast.get_source_segment(source, node)
            if segment is not None:
                return segment
    raise ValueError(f"{script} defines no top-level class or function named {name!r}.")


QUICKSTART = [
    (
        "md",
        """\
# traxon quickstart

A spiking network that learns **online**: its weights change while it runs, from
eligibility traces carried forward in time (memory constant in the length of the run).

This notebook builds a small network with the core API, looks at its spikes, attaches
`traxon.online_learner`, trains it on handwritten digits encoded as spike latencies and
evaluates it. Set the environment variable `TRAXON_QUICK=1` for a tiny version (seconds).""",
    ),
    (
        "code",
        """\
import os

QUICK = os.environ.get("TRAXON_QUICK") == "1"

import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

import traxon
from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.plot import activity, learning_curve, raster, readout
from traxon.tasks import SpikingDigits

N_BATCHES = 5 if QUICK else 300""",
    ),
    (
        "md",
        """\
## The task

scikit-learn's 8x8 digits (bundled, no download). With `encoding="latency"` each pixel
brighter than a threshold spikes once, early if bright, late if dim, within 20 steps of
1 ms. A `Batch` is time-major: `x` `(T, B, 64)`, `y` `(T, B)`, `mask` `(T, B)`.""",
    ),
    (
        "code",
        """\
task = SpikingDigits(encoding="latency", n_steps=20)
batch = task.sample(0, batch_size=4)
print(batch.x.shape, batch.y.shape, batch.label)

fig, axes = plt.subplots(1, 2, figsize=(9, 3), gridspec_kw={"width_ratios": [1, 3]})
first_spike = np.where(batch.x[:, 0].any(0), batch.x[:, 0].argmax(0), np.nan)
axes[0].imshow(first_spike.reshape(8, 8), cmap="viridis_r")
axes[0].set_title(f"digit {batch.label[0]}: spike time per pixel")
raster(batch.x, ax=axes[1], title="its 64 input spike trains")
plt.tight_layout()""",
    ),
    (
        "md",
        """\
## The network

64 inputs drive 100 LIF neurons through an exponential synapse (5 ms); a leaky readout
(10 ms) of 10 outputs reads their spikes. `Network` is configuration only: the numbers live
in `params` (`{projection: weight}`) and `state` (`{population: {variable: (B, N)}}`).""",
    ),
    (
        "code",
        """\
net = Network(
    inputs=task.n_in,
    populations={"hidden": Population(LIF(tau=10.0, R=10.0), 100)},
    projections=[Projection("x", "hidden", Dense(gain=2.0), synapse=Expon(5.0))],
    readout=Readout("hidden", task.n_out, tau=10.0),
)
params, state = net.init(jax.random.PRNGKey(0), batch_size=4)
print({k: v.shape for k, v in params.items()})
print(net.populations["hidden"].traced)  # the state variables per neuron: S = 2

res = net.simulate(params, state, batch.x, record=("spike", "V"))
# spikes, three membrane potentials and the readout of the first sample (random weights)
activity(res.record, res.outputs, threshold=1.0, target=int(batch.label[0]));""",
    ),
    (
        "md",
        """\
## Learning online

`online_learner` binds a learning rule (here ES-D-RTRL, memory linear in the number of
neurons), a loss and an optax optimiser to the network. `fit` resets the neurons at the
start of each sequence, learns through it and applies the accumulated gradient at its end
(`update_every="sequence"`; `update_every=1` would update at every step).""",
    ),
    (
        "code",
        """\
learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(5e-3), update_every="sequence")
history = learner.fit(task.stream(seed=0, batch_size=32), n_batches=N_BATCHES, progress=True)
learning_curve(history);""",
    ),
    (
        "code",
        """\
test = next(task.epoch(batch_size=task.n_examples("test")))
result = learner.evaluate(learner.state, test.x, test.y, test.mask)
print(f"test accuracy on {test.x.shape[1]} held-out digits: {result['accuracy']:.3f}")

res = net.simulate(learner.params, net.init_state(1), test.x[:, :1])
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
raster(res.record, ax=axes[0], title=f"after training: digit {test.label[0]}")
readout(res.outputs, target=int(test.label[0]), ax=axes[1], title="readout")
plt.tight_layout()""",
    ),
    (
        "md",
        """\
## The functional core

Everything above is a thin stateful layer over pure functions: a `LearnerState` is a
pytree of arrays (a `lax.scan` carry, a checkpoint), and `run` is one `lax.scan` over the
time steps, ready for `jax.jit`.""",
    ),
    (
        "code",
        """\
@jax.jit
def train_on(ls, x, y, mask):
    ls = learner.reset_sequence(ls)  # fresh neurons and traces, weights kept
    ls, metrics = learner.run(ls, x, y, mask)  # T steps as one lax.scan
    return learner.end_sequence(ls), metrics  # apply what is left


ls = learner.state  # a LearnerState: weights, optimiser state, traces, counters
b = task.sample(1, batch_size=32)
ls, metrics = train_on(ls, b.x, b.y, b.mask)
shapes = {k: v.shape for k, v in metrics.items() if k != "rates"}
print(type(ls).__name__, int(ls.step), "steps; metrics per step:", shapes)""",
    ),
]

ALGORITHMS = [
    (
        "md",
        """\
# D-RTRL, ES-D-RTRL and BPTT

Three questions, answered on small networks:

1. **How close are the online gradients to BPTT's?** Cosine and norm ratio per weight,
   on a recurrent network where neither online rule is exact.
2. **How does memory grow with the length of the run?** The compiled program's working
   memory for T steps, from XLA's `memory_analysis()`.
3. **How do two rules learn?** Learning curves of D-RTRL and ES-D-RTRL on the same task.

Set `TRAXON_QUICK=1` for a tiny version (seconds).""",
    ),
    (
        "code",
        """\
import os

QUICK = os.environ.get("TRAXON_QUICK") == "1"

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import optax

import traxon
from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.diagnostics import compare
from traxon.learn import cross_entropy
from traxon.plot import fidelity_bars, learning_curve, memory_lines
from traxon.tasks import SpikingDigits

N, T, B, N_IN = (12, 40, 2, 5) if QUICK else (48, 200, 4, 10)""",
    ),
    (
        "md",
        """\
## 1. Gradient fidelity

A recurrent population of LIF neurons behind exponential synapses, read by a leaky
readout: a network where neither online rule is exact. `traxon.diagnostics.compare` runs
each rule and BPTT (`jax.grad` through a `lax.scan` over the same steps) on the same
weights and data, and reports per weight the cosine and the norm ratio of the rule's
gradient to BPTT's, with the size of the rule's state and its time per step.""",
    ),
    (
        "code",
        """\
net = Network(
    inputs=N_IN,
    populations={"h": Population(LIF(tau=20.0), N)},
    projections=[
        Projection("x", "h", Dense(gain=4.0), synapse=Expon(5.0)),
        Projection("h", "h", Dense(gain=1.0), synapse=Expon(5.0), delay=1),
    ],
    readout=Readout("h", 2, tau=20.0),
)
params = net.init_params(jax.random.PRNGKey(0))
k1, k2 = jax.random.split(jax.random.PRNGKey(1))
xs = (jax.random.uniform(k1, (T, B, N_IN)) < 0.3).astype(jnp.float32)
ys = jax.random.randint(k2, (T, B), 0, 2)

spikes = net.simulate(params, net.init_state(B), xs).record["h"]["spike"]
print(f"{int(spikes.sum())} spikes in {T} steps x {B} samples x {N} neurons")

table = compare(net, xs, ys, algorithms=["d_rtrl", "es_d_rtrl"], params=params)
print(table.to_markdown())""",
    ),
    (
        "code",
        """\
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
fidelity_bars(table, metric="cosine", ax=axes[0])
fidelity_bars(table, metric="norm_ratio", ax=axes[1])
plt.tight_layout()""",
    ),
    (
        "md",
        """\
The readout's own weights (`h->readout`, `readout.bias`) are exact for every rule. The
hidden weights lose the terms that cross between neurons through the recurrent synapses;
ES-D-RTRL also replaces each synapse's trace by a product of a presynaptic and a
postsynaptic trace. On a single population without the recurrent projection, D-RTRL's
cosine is 1 for every weight (try it: drop the `h->h` projection).""",
    ),
    (
        "md",
        """\
## 2. Memory against the length of the run

One jitted call that processes T steps and returns the gradient. XLA reports the
working memory it allocates (`temp_size_in_bytes`; the inputs are arguments and not
counted). BPTT stores every step; the online rules carry only the current traces.""",
    ),
    (
        "code",
        """\
lengths = (20, 40) if QUICK else (100, 200, 400, 800, 1600)
state = net.init_state(B)


def gradient_fn(name):
    # one sequence from the resting state -> the accumulated gradient
    if name == "bptt":
        return lambda p, x, y, w: traxon.bptt_gradient(
            net, cross_entropy.fn, p, state, {"x": x}, y, w
        )[0]
    tracer = traxon.get_algorithm(name).bind(net, cross_entropy.fn)

    def run(p, x, y, w):
        tstate = tracer.init(p, state, target_example=y[0])

        def body(carry, inp):
            st, ts = carry
            st, ts, _ = tracer.step(p, st, ts, *inp)
            return (st, ts), None

        (_, tstate), _ = jax.lax.scan(body, (state, tstate), ({"x": x}, y, w))
        return tracer.gradients(p, tstate)

    return run


rows = []
for T_run in lengths:
    xs_T = jnp.zeros((T_run, B, N_IN))
    ys_T = jnp.zeros((T_run, B), jnp.int32)
    ws_T = jnp.full((T_run, B), 1.0 / B)
    for name in ("d_rtrl", "es_d_rtrl", "bptt"):
        compiled = jax.jit(gradient_fn(name)).lower(params, xs_T, ys_T, ws_T).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        rows.append({"algorithm": name, "T": T_run, "temp_bytes": temp})
        print(f"T={T_run:5d}  {name:10s} {temp / 2**10:10.1f} KiB")

memory_lines(rows, x="T", y="temp_bytes", unit="KiB");""",
    ),
    (
        "md",
        """\
## 3. Learning curves

The digits task and network of the quickstart, trained with D-RTRL and with ES-D-RTRL from
the same initial weights and the same batches. `learning_curve` takes `{name: history}`.""",
    ),
    (
        "code",
        """\
task = SpikingDigits(encoding="latency", n_steps=20)
digits_net = Network(
    inputs=task.n_in,
    populations={"hidden": Population(LIF(tau=10.0, R=10.0), 100)},
    projections=[Projection("x", "hidden", Dense(gain=2.0), synapse=Expon(5.0))],
    readout=Readout("hidden", task.n_out, tau=10.0),
)
n_batches = 4 if QUICK else 150
histories, accuracy = {}, {}
test = next(task.epoch(batch_size=task.n_examples("test")))
for name in ("d_rtrl", "es_d_rtrl"):
    learner = traxon.online_learner(digits_net, name, optax.adam(5e-3), update_every="sequence")
    histories[name] = learner.fit(task.stream(seed=0, batch_size=32), n_batches=n_batches)
    accuracy[name] = learner.evaluate(learner.state, test.x, test.y, test.mask)["accuracy"]
print({k: round(v, 3) for k, v in accuracy.items()})
learning_curve(histories);""",
    ),
]

BRAINPY = [
    (
        "md",
        """\
# Online learning on an unmodified brainpy.state network

A network written in plain `brainpy.state`, as its documentation writes it, trained online by
traxon **without changing a line of it**: `traxon.online_learner(module, input_size=...)`
reads the module's step, finds its weights, neuron populations and readout, and trains the
module's own `ParamState` objects while it runs, with eligibility traces (memory constant in
the length of the run).

Needs `pip install "traxon[brainpy]"`. Set `TRAXON_QUICK=1` for a tiny version (seconds).""",
    ),
    (
        "code",
        """\
import os
from typing import Any

QUICK = os.environ.get("TRAXON_QUICK") == "1"

import brainevent
import brainpy.state as bps
import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import traxon
from traxon.diagnostics import compare
from traxon.plot import fidelity_bars, learning_curve, raster, readout

brainevent.config.set_backend("cpu", "jax_raw")  # brainevent's pure-JAX CPU kernels
brainstate.environ.set(dt=1.0 * u.ms)  # traxon reads dt from brainstate's environment

N_IN, N_REC = 20, 40
STEPS, BATCH, SEQUENCES = (40, 8, 5) if QUICK else (100, 32, 60)""",
    ),
    (
        "md",
        """\
## The network, in plain brainpy.state

Recurrent LIF neurons, exponential AlignPost synapses (`AlignPostProj` + `Expon` + `CUBA`)
for the input and the recurrent connections, and a `LeakyRateReadout`. `update(x)` is one
time step; the recurrent projection reads the spikes of the previous step.""",
    ),
    (
        "code",
        example_source("RecurrentSNN")
        + """


module = RecurrentSNN()
brainstate.nn.init_all_states(module, batch_size=BATCH)""",
    ),
    (
        "md",
        """\
## The task

Which of two groups of input channels fires more? One half of the 20 channels fires at
40 Hz and the other at 5 Hz; the label says which. The answer counts during the last third
of each sequence (the mask).""",
    ),
    (
        "code",
        example_source("batch")
        + """


test = batch(np.random.default_rng(1), BATCH, STEPS)


def run_module(x):
    # the module's own loop (brainstate), recording the spikes and the readout
    brainstate.nn.init_all_states(module, batch_size=x.shape[1])

    def step(x_t):
        out = module.update(x_t)
        return u.get_mantissa(out), module.neu.get_spike()

    return brainstate.transform.for_loop(step, x)


outputs, spikes = run_module(test[0])
fig, axes = plt.subplots(1, 3, figsize=(13, 3))
raster(test[0], ax=axes[0], title=f"input, label {test[1][0, 0]}")
raster(spikes, ax=axes[1], title="LIF spikes (random weights)")
readout(outputs, target=int(test[1][0, 0]), ax=axes[2], title="readout")
plt.tight_layout()""",
    ),
    (
        "md",
        """\
## Attaching the learner

`online_learner` takes the module as it is, with the number of input channels. The adapted
network shows what traxon found: one population whose neurons each carry a membrane
potential `V` and one conductance `g` (the two projections have equal synapses, so they
share it), the readout, and three weights (input, recurrent, readout).""",
    ),
    (
        "code",
        example_source("attach_learner")
        + """


# The learner starts every sequence from the states the module holds when it is attached:
# reset them (the run above left them at the end of a sequence).
brainstate.nn.init_all_states(module, batch_size=BATCH)
learner = attach_learner(module, input_size=N_IN)
for name, pop in learner.net.populations.items():
    print(f"population {name!r}: {pop.size} neurons, state per neuron {pop.traced}")
for p in learner.net.projections:
    print(f"weight {p.name!r}: {p.source} -> {p.target} (delay {p.delay})")""",
    ),
    (
        "md",
        """\
## Learning online

`fit` resets the network at the start of each sequence, learns through it (ES-D-RTRL:
memory linear in the number of neurons) and applies the sequence's gradient at its end.""",
    ),
    (
        "code",
        """\
learner.init_state(BATCH)
before = learner.evaluate(learner.state, *test)["accuracy"]
rng = np.random.default_rng(0)
history = learner.fit((batch(rng, BATCH, STEPS) for _ in range(SEQUENCES)), n_batches=SEQUENCES)
after = learner.evaluate(learner.state, *test)["accuracy"]
print(f"test accuracy {before:.2f} -> {after:.2f} after {SEQUENCES} sequences")
learning_curve(history, keys=("loss", "accuracy", "rate/" + learner.net.order[0]));""",
    ),
    (
        "md",
        """\
## The module is the trained network

After every update the learner writes the weights back into the module's `ParamState`
objects, with their units. Running the module with brainstate's own loop gives the same
answers as the learner's evaluation.""",
    ),
    (
        "code",
        """\
w_in = module.inp.comm.weight.value["weight"]
print("input weight:", w_in.shape, u.get_unit(w_in))
outputs, spikes = run_module(test[0])
# the class with the largest softmax summed over the masked steps, as evaluate() does
votes = jnp.sum(jax.nn.softmax(outputs, axis=-1) * test[2][..., None], axis=0)
accuracy = float(jnp.mean(jnp.argmax(votes, -1) == test[1][-1]))
print(f"accuracy of the module itself: {accuracy:.2f} (learner.evaluate: {after:.2f})")

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
raster(spikes, ax=axes[0], title="LIF spikes after learning")
readout(outputs, target=int(test[1][0, 0]), ax=axes[1], title="readout after learning")
plt.tight_layout()""",
    ),
    (
        "md",
        """\
## How close to BPTT?

`traxon.diagnostics.compare` takes the learner (its network and current weights) and
compares each rule's gradient of one sequence with BPTT's through the same adapted
network. The recurrent weight is where the online rules approximate; the readout's weight
is exact.""",
    ),
    (
        "code",
        """\
x, y, mask = batch(np.random.default_rng(2), BATCH, STEPS)
table = compare(learner, x, y, masks=mask, algorithms=["d_rtrl", "es_d_rtrl"])
print(table.to_markdown())
fidelity_bars(table, metric="cosine");""",
    ),
]

NOTEBOOKS = {
    "quickstart.ipynb": QUICKSTART,
    "algorithms_vs_bptt.ipynb": ALGORITHMS,
    "brainpy_state_online.ipynb": BRAINPY,
}


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook(
        cells=[
            new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: rebuilding gives identical files
    nbformat.validate(nb)
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    for name, cells in NOTEBOOKS.items():
        path = args.out / name
        nbformat.write(notebook(cells), path)
        print("wrote", path)


if __name__ == "__main__":
    main()
