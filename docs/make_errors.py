"""Write ``docs/errors.md``: every error traxon raises, triggered for real.

Each case below is a short snippet that makes traxon raise; this script runs it, records
the exception exactly as traxon produces it, and writes the page with the cause and the
fix next to the message. Run it from the repository root after changing a message::

    python docs/make_errors.py            # rewrite docs/errors.md
    python docs/make_errors.py --check    # exit 1 if docs/errors.md is out of date

The snippets of a section share one namespace (its ``setup`` runs first), so a network
built once serves several cases.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import textwrap
import traceback
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parent / "errors.md"

PREAMBLE = """\
import jax
import jax.numpy as jnp
import numpy as np
import optax
import brainunit as u
import traxon
import traxon.cli
import traxon.plot
import traxon.recipes
from traxon.core import *
from traxon.learn import Loss, load_checkpoint, save_checkpoint
from traxon.tasks import *
"""

HEADER = """\
# Errors and what they mean

traxon checks its arguments before any work (at construction, or before `jit`) and every
message names the argument, shows what it received and says what is allowed. This page
lists them: for each, a snippet that triggers it, the message exactly as traxon produces
it, what causes it and how to fix it.

This page is generated: `python docs/make_errors.py` runs every snippet and records the
messages (`tests/test_docs.py` fails when the page and the library drift apart). The
snippets assume

```python
{preamble}```
"""

#: The small network most sections' setup builds.
NET = """\
net = Network(3, {"h": Population(LIF(), 4)}, [Projection("x", "h", Dense(3.0))],
              readout=Readout("h", 2))
"""

# Each section: (title, intro, setup code shown on the page, cases).
# Each case: (title, code, cause, fix).
SECTIONS: list[tuple[str, str, str, list[tuple[str, str, str, str]]]] = [
    (
        "Shared argument checks",
        "Numbers of neurons, synapses, surrogates and the learner go through the same checks; "
        "the argument's name in backquotes is the one you passed.",
        "",
        [
            (
                "A value must be positive",
                "LIF(tau=-2.0)",
                "A time constant, a width, a scale or a threshold gap is zero or negative (or "
                "NaN/Inf). Arrays are checked element-wise and the smallest element is shown.",
                "Pass a positive, finite value (time constants in ms).",
            ),
            (
                "A value must lie in a range",
                "LeakyIntegrator(kappa=1.5)",
                "A decay per step (`kappa`) outside [0, 1].",
                "Pass a decay in [0, 1], or a time constant instead (`tau=` in ms).",
            ),
            (
                "A quantity has the wrong unit",
                "LIF(tau=5 * u.mV)",
                "A brainunit Quantity of another dimension. Plain numbers are taken to be in the "
                "unit shown (ms for times, mV for voltages).",
                "Pass `5 * u.ms`, or the plain number `5.0`.",
            ),
            (
                "A unitless value has a unit",
                'Surrogate("triangle", width=1.0 * u.ms)',
                "Surrogate widths and scales, weight gains and decays per step have no unit.",
                "Pass a plain number.",
            ),
            (
                "A number is missing",
                "LIF(tau=None)",
                "`None` or a bool where a number is needed.",
                "Pass a number.",
            ),
        ],
    ),
    (
        "Neurons, synapses and surrogates",
        "",
        "",
        [
            (
                "Threshold below reset",
                "LIF(V_th=0.0, V_reset=1.0)",
                "The spike threshold must lie above the reset potential (the surrogate's input "
                "is normalised by `V_th - V_reset`). For `Izhikevich` the reset is `c`.",
                "Swap or correct the two potentials.",
            ),
            (
                "Unknown reset mode",
                'LIF(reset="zero")',
                "`reset` is `'soft'` (subtract the threshold gap) or `'hard'` (set to `V_reset`).",
                "Pass one of the two.",
            ),
            (
                "A neuron parameter that is not a number",
                'LIF(tau="10")',
                "A string (or an array of strings, booleans or objects) where a number or one "
                "number per neuron is needed.",
                "Pass a number (`tau=10.0`) or an array of numbers.",
            ),
            (
                "Readout integrator without a time scale",
                "LeakyIntegrator()",
                "A `LeakyIntegrator` needs exactly one of `tau` (ms) or `kappa` (decay per step).",
                "Pass one of them; `kappa=0.0` is an instantaneous readout.",
            ),
            (
                "Synapse time constant is an array",
                "Expon(tau=[2.0, 5.0])",
                "Synapse kinetics are shared by a whole channel, so their time constants are "
                "scalars.",
                "Pass one number; use two projections (two channels) for two time constants.",
            ),
            (
                "Dual exponential with rise slower than decay",
                "DualExpon(tau_rise=10.0, tau_decay=5.0)",
                "`tau_decay` must be larger than `tau_rise`.",
                "Swap them.",
            ),
            (
                "Reading a delta synapse's output",
                "Delta().output({})",
                "`Delta` has no state; its input jumps the membrane directly. Only code that "
                "treats it like a synapse with state (a custom neuron, say) can hit this.",
                "Use `Expon` (or another synapse with state) if you need a current to read.",
            ),
            (
                "Unknown surrogate",
                'Surrogate("relu")',
                "The surrogate gradient's name is not one of the four built in.",
                'Pick one of them (`"triangle"` is e-prop\'s).',
            ),
            (
                "Surrogate given as something else",
                "LIF(spike_fn=3)",
                "`spike_fn` takes a name or a `Surrogate`.",
                'Pass `"fast_sigmoid"` or `Surrogate("fast_sigmoid", width=0.5)`.',
            ),
        ],
    ),
    (
        "Weight ops",
        "Shape and index checks of the weight operations run when the op is built and again when "
        "a `Network` connects it (then the message names the projection).",
        "",
        [
            (
                "Dale's sign is not +1/-1",
                "Dense(sign=0)",
                "`sign` must be `+1`, `-1` or one sign per presynaptic neuron.",
                "Pass `+1` (excitatory), `-1` (inhibitory) or an array of them.",
            ),
            (
                "Dale's signs do not match the source",
                'Network(3, {"h": Population(LIF(), 4)}, '
                '[Projection("x", "h", Dense(sign=[1, -1]))])',
                "An array of signs needs one entry per presynaptic neuron.",
                "Give as many signs as the source has neurons (here 3).",
            ),
            (
                "One-to-one weights between different sizes",
                'Network(3, {"h": Population(LIF(), 4)}, [Projection("x", "h", ElementWise())])',
                "`ElementWise` connects neuron i to neuron i.",
                "Connect populations of equal size, or use `Dense`/`Sparse`.",
            ),
            (
                "FixedInDegree without indices",
                "FixedInDegree()",
                "`FixedInDegree` needs the presynaptic partners of every target neuron.",
                "Pass `pre_index` (n_out, K), or build one with `FixedInDegree.random(key, n_in, "
                "n_out, degree)`.",
            ),
            (
                "Index array of the wrong shape or dtype",
                "FixedInDegree(pre_index=np.array([0.0, 1.0]))",
                "`pre_index` (and `post_index` of `FixedOutDegree`) is a 2-D integer array.",
                "Pass integers of shape (n_out, K) (resp. (n_in, K)).",
            ),
            (
                "Index out of range",
                'Network(3, {"h": Population(LIF(), 2)}, '
                '[Projection("x", "h", FixedInDegree(pre_index=[[0, 5], [1, 2]]))])',
                "A presynaptic (or postsynaptic) index is negative or not below the size of the "
                "population it indexes.",
                "Fix the index arrays; the message shows the range found.",
            ),
            (
                "Index rows do not match the population",
                'Network(3, {"h": Population(LIF(), 4)}, '
                '[Projection("x", "h", FixedInDegree(pre_index=[[0, 1], [1, 2]]))])',
                "`pre_index` has one row per target neuron (`post_index` one per source neuron).",
                "Give as many rows as the population has neurons.",
            ),
            (
                "Degree larger than the population",
                "FixedInDegree.random(jax.random.PRNGKey(0), n_in=3, n_out=4, degree=5)",
                "Each neuron draws `degree` distinct partners, so `degree` cannot exceed the "
                "partner population's size.",
                "Lower `degree`.",
            ),
            (
                "FixedOutDegree without indices",
                "FixedOutDegree()",
                "`FixedOutDegree` needs the targets of every presynaptic neuron.",
                "Pass `post_index` (n_in, K), or use `FixedOutDegree.random(...)`.",
            ),
            (
                "Event-driven buffer of size zero",
                "FixedOutDegree(post_index=[[0, 1]], max_active=0)",
                "`max_active` is how many active presynaptic rows are gathered per sample.",
                "Pass a positive integer, or `None` for the dense scatter.",
            ),
            (
                "Declared size below the targets",
                'Network(2, {"h": Population(LIF(), 2)}, '
                '[Projection("x", "h", FixedOutDegree(post_index=[[0], [1]], n_out=3))])',
                "`n_out` given to `FixedOutDegree` or `Sparse` disagrees with the target "
                "population.",
                "Leave `n_out` out (`FixedOutDegree`) or set it to the target's size.",
            ),
            (
                "Sparse index arrays of different lengths",
                "Sparse(pre=[0, 1], post=[0], n_out=2)",
                "`Sparse` takes one (pre, post) pair per synapse.",
                "Pass two 1-D arrays of equal length.",
            ),
            (
                "Sparse indices that are not integers",
                "Sparse(pre=[0.0, 1.0], post=[0, 1], n_out=2)",
                "Indices must be integers.",
                "Cast them (`np.asarray(pre, int)`).",
            ),
            (
                "Sparse target size missing",
                "Sparse(pre=[0, 1], post=[0, 1], n_out=0)",
                "`Sparse` needs the number of target neurons.",
                "Pass `n_out`, the target population's size.",
            ),
        ],
    ),
    (
        "Projections and networks",
        "",
        "",
        [
            (
                "Unknown alignment",
                'Projection("x", "h", align="left")',
                "`align` is `'post'` (synapse state per target neuron) or `'pre'` (per source "
                "neuron).",
                "See [AlignPost and AlignPre](concepts.md#alignpost-and-alignpre-synapses).",
            ),
            (
                "Delay other than 0 or 1",
                'Projection("h", "h", delay=2)',
                "Projections read this step's (`0`) or the previous step's (`1`) spikes.",
                "Use `delay=1` for recurrent loops; longer delays need intermediate populations.",
            ),
            (
                "Weight op of the wrong type",
                'Projection("x", "h", op="dense")',
                "`op` is a `WeightOp` object, not a name.",
                "Pass `Dense()`, `Sparse(...)`, ...",
            ),
            (
                "Synapse of the wrong type",
                'Projection("x", "h", synapse=5.0)',
                "`synapse` is a `Synapse` object or `None`.",
                "Pass `Expon(5.0)`.",
            ),
            (
                "AlignPre without a synapse state",
                'Projection("x", "h", align="pre")',
                "AlignPre filters the presynaptic spikes, so it needs a synapse with state.",
                'Give `synapse=Expon(...)` (or `Alpha`, `DualExpon`), or use `align="post"`.',
            ),
            (
                "Readout without sources",
                "Readout((), 2)",
                "The readout reads the spikes of at least one population.",
                'Name the populations: `Readout("hidden", 2)`.',
            ),
            (
                "Readout with both tau and kappa",
                'Readout("h", 2, tau=20.0, kappa=0.9)',
                "Both set the readout's decay.",
                "Give one.",
            ),
            (
                "Population of something else",
                "Population(Expon(5.0), 10)",
                "A `Population` holds a `Neuron` (LIF, ALIF, Izhikevich, LeakyIntegrator or your "
                "subclass).",
                "Pass a neuron model.",
            ),
            (
                "Population of zero neurons",
                "Population(LIF(), 0)",
                "Sizes are positive integers.",
                "Pass the number of neurons.",
            ),
            (
                "Per-neuron parameter of the wrong length",
                "Population(LIF(tau=np.full(5, 10.0)), 4)",
                "A neuron parameter given as an array has one value per neuron; this one has "
                "another length than the population.",
                "Give one value for all neurons, or an array of shape `(size,)`.",
            ),
            (
                "A network without populations",
                "Network(3, {}, [])",
                "Nothing to simulate: no population and no readout.",
                'Add a population, e.g. `{"h": Population(LIF(), 100)}`.',
            ),
            (
                "Input of size zero",
                'Network({"x": 0}, {"h": Population(LIF(), 2)}, [])',
                "Each input has a positive integer number of channels.",
                "Pass `{name: size}` (or one int for a single input named `x`).",
            ),
            (
                "Population given as a neuron",
                'Network(3, {"h": LIF()}, [])',
                "`populations` maps names to `Population(neuron, size)`.",
                'Wrap the neuron: `{"h": Population(LIF(), 100)}`.',
            ),
            (
                "A population named readout",
                'Network(3, {"readout": Population(LIF(), 2)}, [], readout=Readout("readout", 2))',
                "The readout is added as a population named `readout`.",
                "Rename your population.",
            ),
            (
                "Name used twice",
                'Network({"h": 3}, {"h": Population(LIF(), 2)}, [])',
                "Inputs and populations share one namespace (projections refer to them by name).",
                "Rename one of them.",
            ),
            (
                "Unknown source or target",
                'Network(3, {"h": Population(LIF(), 2)}, [Projection("y", "h")])',
                "A projection names an input or population that does not exist.",
                "Check the spelling; the message lists the names that exist.",
            ),
            (
                "Unknown target",
                'Network(3, {"h": Population(LIF(), 2)}, [Projection("x", "out")])',
                "Targets must be populations.",
                "Check the spelling.",
            ),
            (
                "Input read with a delay",
                'Network(3, {"h": Population(LIF(), 2)}, [Projection("x", "h", delay=1)])',
                "External inputs are read at the step they are given.",
                "Use `delay=0` (delay the input yourself if you need to).",
            ),
            (
                "Population reading itself without delay",
                'Network(3, {"h": Population(LIF(), 2)}, [Projection("h", "h")])',
                "A step cannot read the spikes it is computing.",
                "Give the recurrent projection `delay=1`.",
            ),
            (
                "Two projections with one name",
                'Network(3, {"h": Population(LIF(), 2)}, [Projection("x", "h", name="w"), '
                'Projection("h", "h", delay=1, name="w")])',
                "Projection names are the keys of `params`.",
                "Give unique `name=`s (unnamed parallel projections are numbered for you).",
            ),
            (
                "A loop without delay",
                'Network(3, {"a": Population(LIF(), 2), "b": Population(LIF(), 2)}, '
                '[Projection("a", "b"), Projection("b", "a")])',
                "Populations that read each other's spikes of the same step cannot be ordered.",
                "Give one projection of the loop `delay=1`.",
            ),
        ],
    ),
    (
        "Running a network",
        "",
        NET
        + """\
params, state = net.init(jax.random.PRNGKey(0), batch_size=2)
""",
        [
            (
                "Batch size zero",
                "net.init_state(0)",
                "The batch is a positive number of independent copies.",
                "Pass `batch_size >= 1`.",
            ),
            (
                "Integer dtype",
                "net.init_state(2, dtype=jnp.int32)",
                "States and weights are floating point.",
                "Pass `jnp.float32` or `jnp.float64` (the latter with x64 enabled).",
            ),
            (
                "Input of the wrong shape",
                "net.step(params, state, jnp.ones((2, 5)))",
                "One step takes `(B, n_in)`; `simulate` takes `(T, B, n_in)`.",
                "Match the network's input size and the state's batch size.",
            ),
            (
                "NaN in the input",
                "net.step(params, state, jnp.full((2, 3), jnp.nan))",
                "An input (or a state) holds NaN or Inf; the message says where the first is.",
                "Clean the data before stepping.",
            ),
            (
                "Text as input",
                'net.step(params, state, np.full((2, 3), "a"))',
                "Inputs are numeric arrays.",
                "Convert your data to numbers.",
            ),
            (
                "Missing or unexpected inputs",
                'net.step(params, state, {"x": jnp.ones((2, 3)), "y": jnp.ones((2, 3))})',
                "A dict of inputs must name exactly the network's inputs.",
                "Pass one array per input name.",
            ),
            (
                "A plain array for several inputs",
                """\
two = Network({"a": 2, "b": 2}, {"h": Population(LIF(), 2)},
              [Projection("a", "h"), Projection("b", "h")])
two.step(two.init_params(jax.random.PRNGKey(0)), two.init_state(1), jnp.ones((1, 2)))""",
                "With more than one input the network cannot guess which one an array is.",
                'Pass `{"a": ..., "b": ...}`.',
            ),
            (
                "Weights of another network",
                'net.step({"x->h": params["x->h"]}, state, jnp.ones((2, 3)))',
                "`params` lacks a weight of this network, or has one it does not know.",
                "Use `net.init_params(...)` of this network, or a learner's `state.params`.",
            ),
            (
                "A weight of the wrong shape",
                'net.step({**params, "x->h": jnp.ones((4, 3))}, state, jnp.ones((2, 3)))',
                "A weight's shape does not match its projection.",
                "Check sizes; dense weights are `(n_in, n_out)`.",
            ),
            (
                "Weights that are not a dict",
                "net.step([params], state, jnp.ones((2, 3)))",
                "`params` is `{projection name: array}`.",
                "Pass the dict.",
            ),
            (
                "A state of another network",
                'net.check_state({"h": state["h"]})',
                "The state's tree structure differs (a population or variable is missing); both "
                "structures are printed.",
                "Create states with `net.init_state(batch_size)`.",
            ),
        ],
    ),
    (
        "Gated cells, gap junctions and convolutions",
        "The models of [models beyond spiking neurons](models.md) check their wiring when the "
        "`Network` is built, and a rule that cannot trace a weight says so when it is bound.",
        """\
from traxon.learn import cross_entropy

gru = Population(GRU(), 4)
worm = Population(Graded(tau=10.0), 5)
conv = Conv2D(2, 3, kernel_size=3, in_shape=(5, 5), padding="SAME")  # 2 x 5 x 5 -> 3 x 5 x 5
""",
        [
            (
                "A projection onto a gated cell without a port",
                'Network(3, {"h": gru}, [Projection("x", "h", Dense())])',
                "A gated cell has no single current: each input feeds one gate.",
                'Give `port=` one of the gates listed, e.g. `Projection("x", "h", Dense(), '
                'port="z")`.',
            ),
            (
                "An unknown port",
                'Network(3, {"h": gru}, [Projection("x", "h", Dense(), port="gate")])',
                "The port is not one of the cell's gates.",
                "Use a gate the message lists.",
            ),
            (
                "A port on a population without gates",
                'Network(3, {"h": worm}, [Projection("x", "h", Dense(), port="z")])',
                "Only gated cells (GRU, MinGRU) have gates.",
                "Leave `port` unset.",
            ),
            (
                "A gap junction between two populations",
                'Network(3, {"a": worm, "b": worm}, [Projection("x", "a", Dense()), '
                'Projection("a", "b", GapJunction(), signal="V", delay=1)])',
                "The coupling `g_ij (V_j - V_i)` needs both membranes, so both cells live in "
                "one population.",
                "Put the coupled cells in one population (parameters may differ per neuron) "
                "and list the pairs with `SparseGapJunction`.",
            ),
            (
                "A trainable symmetric conductance under a per-entry rule",
                'net = Network(3, {"h": worm}, [Projection("x", "h", Dense(3.0)), '
                'Projection("h", "h", GapJunction(), signal="V", delay=1)], '
                'readout=Readout("h", 2))\n'
                'traxon.get_algorithm("d_rtrl").bind(net, cross_entropy.fn)',
                "One shared conductance drives two neurons; `d_rtrl` keeps one trace per weight "
                "entry and its neuron.",
                "Follow the advice: `symmetric=False`, `es_d_rtrl`, `bptt` or `rtrl` "
                "(`tests/test_gap.py` trains each).",
            ),
            (
                "A convolution under a per-entry rule",
                'net = Network(2 * 5 * 5, {"h": Population(LIF(), 3 * 5 * 5)}, '
                '[Projection("x", "h", conv)], readout=Readout("h", 2))\n'
                'traxon.get_algorithm("d_rtrl").bind(net, cross_entropy.fn)',
                "A kernel entry is shared by every output position, so it has no one neuron "
                "for a per-entry trace.",
                "Use `es_d_rtrl`, `bptt` or `rtrl` (`tests/test_conv.py`).",
            ),
            (
                "A convolution whose input does not match the population",
                'Network(49, {"h": Population(LIF(), 3 * 5 * 5)}, [Projection("x", "h", conv)])',
                "The op's input map `(C, H, W)` flattened channel-major must have as many "
                "values as the source.",
                "Size the source `C * H * W`, or give the op the source's shape.",
            ),
        ],
    ),
    (
        "Learning rules",
        "Binding a rule to a network (`online_learner(...)` does it) checks that every "
        "trainable weight gets its gradient. A rule never returns a silent zero gradient.",
        """\
from traxon.learn import cross_entropy

"""
        + NET
        + """\
params, state = net.init(jax.random.PRNGKey(0), batch_size=2)
""",
        [
            (
                "Unknown algorithm",
                'traxon.get_algorithm("sgd")',
                "The name is not a registered rule.",
                "Use one listed; optimisers (SGD, Adam) are optax's and go to `optimizer=`.",
            ),
            (
                "Options with an algorithm object",
                "traxon.get_algorithm(traxon.es_d_rtrl(), decay=0.9)",
                "Options belong in the constructor of the object.",
                "Write `traxon.es_d_rtrl(decay=0.9)`.",
            ),
            (
                "Decay out of range",
                "traxon.es_d_rtrl(decay=1.5)",
                "A presynaptic decay per step lies in [0, 1].",
                'Pass a decay in [0, 1], or `"auto"` (each variable\'s own leak).',
            ),
            (
                "Decay of the wrong type",
                'traxon.es_d_rtrl(decay="fast")',
                '`decay` is `"auto"` or a float.',
                "Pass one of them.",
            ),
            (
                "Exact traces for unknown weights",
                'traxon.es_d_rtrl(exact=["x->hidden"]).bind(net, cross_entropy.fn)',
                "`exact` names weights that are not trainable weights of the network.",
                "Use the names the message lists (the keys of `params`).",
            ),
            (
                "Invalid BPTT truncation",
                "traxon.bptt(truncation=0)",
                "`truncation` and `window` are positive numbers of steps, or `None`.",
                "Pass a positive integer or `None`.",
            ),
            (
                "BPTT without a window",
                "traxon.bptt().bind(net, cross_entropy.fn)",
                "BPTT buffers a window of steps and must know its length. The learner passes its "
                "update period.",
                "Use it through `online_learner`, or pass `traxon.bptt(window=T)` or "
                "`bind(..., window=T)`.",
            ),
            (
                "BPTT without an example target",
                "traxon.bptt(window=10).bind(net, cross_entropy.fn).init(params, state)",
                "The target buffer is sized from one step's target. Through the learner this "
                "happens with a custom loss given as a plain function.",
                "Pass `target_example=`; with the learner, wrap the loss in "
                "`traxon.learn.Loss(name, fn, 'custom', example=lambda b, n: jnp.zeros((b, n)))`.",
            ),
            (
                "Network without readout",
                """\
no_readout = Network(3, {"h": Population(LIF(), 4)}, [Projection("x", "h")])
traxon.d_rtrl().bind(no_readout, cross_entropy.fn)""",
                "The loss compares the readout's output with the target.",
                "Add `readout=Readout(...)`.",
            ),
            (
                "A weight that cannot affect the loss",
                """\
side = Network(3, {"a": Population(LIF(), 4), "b": Population(LIF(), 4)},
               [Projection("x", "a"), Projection("x", "b")], readout=Readout("a", 2))
traxon.d_rtrl().bind(side, cross_entropy.fn)""",
                "The weight's target population has no path to the readout.",
                "Connect it, or mark the projection `trainable=False`.",
            ),
            (
                "A weight the online rules cannot reach",
                """\
deep = Network(3, {"a": Population(LIF(), 4), "b": Population(LIF(), 4)},
               [Projection("x", "a"), Projection("a", "b", delay=1)], readout=Readout("b", 2))
traxon.es_d_rtrl().bind(deep, cross_entropy.fn)""",
                "D-RTRL and ES-D-RTRL assign credit through learning signals *within* a step. A "
                "population that reaches the readout only through `delay=1` projections gets "
                "none, so its input weights would get an exact zero.",
                "Add a `delay=0` path to the readout (e.g. let the readout read `a` too), train "
                "with `bptt`/`rtrl`, or freeze the weight.",
            ),
            (
                "A neuron model that couples neurons",
                """\
class GlobalInhibition(LIF):
    def update(self, state, current, jump, dt):
        new = super().update(state, current, jump, dt)
        return {"V": new["V"] - 0.1 * jnp.mean(state["V"], axis=-1, keepdims=True)}

coupled = Network(3, {"h": Population(GlobalInhibition(), 4)}, [Projection("x", "h")],
                  readout=Readout("h", 2))
traxon.d_rtrl().bind(coupled, cross_entropy.fn)""",
                "The traces rely on an element-wise transition; binding perturbs neuron 0 and "
                "found other neurons responding.",
                "Express the coupling as a projection (a weight op), or use `bptt`/`rtrl`.",
            ),
        ],
    ),
    (
        "The online learner",
        "Options are checked when the learner is built; data when it is given, before any "
        "work, so a failed call leaves the learner's state as it was.",
        NET,
        [
            (
                "Not a traxon network",
                "traxon.online_learner(object())",
                "The learner takes a `traxon.Network`.",
                "Build one with `traxon.core.Network`.",
            ),
            (
                "Bad update schedule",
                "traxon.online_learner(net, update_every=0)",
                "Updates happen every k >= 1 steps or once per sequence.",
                'Pass a positive integer or `"sequence"`.',
            ),
            (
                "Bad reduction or policy",
                'traxon.online_learner(net, on_nonfinite="ignore")',
                "`batch_reduction` is `mean`/`sum`, `time_reduction` `sum`/`mean`, "
                "`on_nonfinite` `raise`/`skip`.",
                "Pass an allowed value.",
            ),
            (
                "Non-positive clipping norm",
                "traxon.online_learner(net, clip_norm=0.0)",
                "`clip_norm` is the largest gradient norm allowed.",
                "Pass a positive number or `None`.",
            ),
            (
                "Firing-rate target out of range",
                "traxon.online_learner(net, rate_target=2000.0)",
                "`rate_target` is in Hz and at most one spike per step (`1000 / dt`).",
                "Pass a rate in Hz, e.g. `10.0`.",
            ),
            (
                "Negative regulariser strength",
                "traxon.online_learner(net, rate_target=10.0, rate_reg=-1.0)",
                "`rate_reg` scales the firing-rate penalty.",
                "Pass a value >= 0.",
            ),
            (
                "Non-positive rate time constant",
                "traxon.online_learner(net, rate_target=10.0, rate_tau=0.0)",
                "`rate_tau` (ms) is the averaging time of the running rates.",
                "Pass a positive number.",
            ),
            (
                "BPTT per sequence without its length",
                'traxon.online_learner(net, "bptt", update_every="sequence")',
                "BPTT buffers the whole sequence and must know its longest length.",
                "Pass `sequence_length=T`, or `traxon.bptt(window=T)`.",
            ),
            (
                "Unknown loss",
                'traxon.online_learner(net, loss="hinge")',
                "Built-in losses are `cross_entropy` and `mse`.",
                "Pass a callable `fn(output, target) -> (B,)` for anything else.",
            ),
            (
                "Loss of the wrong type",
                "traxon.online_learner(net, loss=3)",
                "`loss` is a name, a `Loss` or a callable.",
                "Pass one of them.",
            ),
            (
                "Reading the state before there is one",
                "traxon.online_learner(net).state",
                "The stateful API creates its state on the first `step`/`fit`.",
                "Call `init_state(batch_size)` first, or use the functional `init`.",
            ),
        ],
    ),
    (
        "The learner's data",
        "",
        NET
        + """\
learner = traxon.online_learner(net, "d_rtrl", optax.adam(1e-2))
learner.init_state(batch_size=2)
x, y = jnp.ones((2, 3)), np.array([0, 1])
""",
        [
            (
                "Batch size differs from the state",
                "learner.step(jnp.ones((5, 3)), np.zeros(5, int))",
                "The learner's state was created for another batch size.",
                "Call `init_state(batch_size=5)` (weights are re-initialised; pass "
                "`params=learner.params` to keep them).",
            ),
            (
                "Targets of the wrong shape",
                "learner.step(x, np.array([[0, 1]]))",
                "Cross-entropy takes one integer class per sample and step.",
                "Pass `(B,)` per step, `(T, B)` to `fit`/`run`.",
            ),
            (
                "Targets that are not integers",
                "learner.step(x, np.array([0.0, 1.0]))",
                "Class targets are indices.",
                "Cast with `.astype(int)`; for regression use `loss='mse'`.",
            ),
            (
                "Class index out of range",
                "learner.step(x, np.array([0, 2]))",
                "A class index is not below the readout's size.",
                "Give the readout one output per class.",
            ),
            (
                "Mask of the wrong shape",
                "learner.step(x, y, mask=np.ones(3))",
                "A mask has one entry per sample (`(T, B)` for sequences).",
                "Pass `(B,)` per step.",
            ),
            (
                "Negative mask weights",
                "learner.step(x, y, mask=np.array([1.0, -1.0]))",
                "A mask entry is a loss weight; a negative one would make that sample's "
                "gradient ascend.",
                "Use weights >= 0 (0 leaves a sample out).",
            ),
            (
                "Sequences of different lengths",
                "learner.fit([(jnp.ones((5, 2, 3)), np.zeros((4, 2), int))])",
                "`x`, `y` and `mask` of one batch have different numbers of steps (axis 0).",
                "Pad or cut them to one length `T` (padding masked out with 0).",
            ),
            (
                "An empty sequence",
                "learner.fit([(jnp.ones((0, 2, 3)), np.zeros((0, 2), int))])",
                "A sequence with no steps has nothing to learn or report.",
                "Drop empty sequences.",
            ),
            (
                "A batch that is not (x, y) or (x, y, mask)",
                "learner.fit([(jnp.ones((5, 2, 3)),)])",
                "Each item of `batches` is unpacked as `(x, y[, mask])`.",
                "Give the targets too, or a `traxon.tasks.Batch`.",
            ),
            (
                "One array instead of an iterable of batches",
                "learner.fit(jnp.ones((5, 2, 3)))",
                "`fit` iterates over batches; an array would be split along time.",
                "Wrap one batch in a list: `fit([(x, y, mask)])`.",
            ),
            (
                "Float class labels in the functional core",
                "learner.run(learner.init(batch_size=2), jnp.ones((5, 2, 3)), "
                "jnp.full((5, 2), 0.7))",
                "Class targets are indices; a float would be truncated (0.7 to class 0).",
                "Cast with `.astype(int)`.",
            ),
            (
                "NaN in given weights",
                """\
bad = {**learner.params, "x->h": learner.params["x->h"].at[0, 1].set(jnp.nan)}
learner.init_state(2, params=bad)""",
                "A weight passed to `init`/`init_state` holds NaN or Inf.",
                "Pass finite weights (an earlier state or checkpoint).",
            ),
            (
                "Evaluating NaN/Inf weights",
                """\
bad = {**learner.params, "readout.bias": jnp.full((2,), jnp.inf)}
learner.evaluate(bad, jnp.ones((5, 2, 3)), np.zeros((5, 2), int))""",
                "Non-finite weights give no meaningful loss or accuracy.",
                "Evaluate finite weights (an earlier state or checkpoint).",
            ),
            (
                "The state would not fit in memory",
                'traxon.online_learner(net, "d_rtrl", memory_limit=1500).init_state(4)',
                "The learner estimates its state from shapes alone before allocating (twice the "
                "state: a step holds the old and the new). The limit is `memory_limit`, else "
                "`TRAXON_MEMORY_LIMIT` (bytes), else the accelerator's free memory, else the "
                "memory available now (at most 90% of physical memory).",
                "Take what the message says would fit (a smaller batch, `es_d_rtrl`), or raise "
                "the limit if the estimate is too cautious.",
            ),
            (
                "Regression targets of the wrong shape",
                """\
regress = traxon.online_learner(net, "d_rtrl", loss="mse")
regress.step(x, np.zeros((2, 3), np.float32))""",
                "`mse` compares each output with a target: `(B, n_out)`.",
                "Match the readout's size.",
            ),
            (
                "Regression targets that are not floats",
                "regress.step(x, np.zeros((2, 2), int))",
                "`mse` targets are floating point.",
                "Cast them.",
            ),
            (
                "NaN in the targets",
                "regress.step(x, np.full((2, 2), np.nan, np.float32))",
                "A target holds NaN or Inf.",
                "Clean the targets, or mask those steps out.",
            ),
            (
                "The loss became NaN",
                """\
def exploding(output, target):
    return jnp.full(output.shape[:1], jnp.nan)

nan_learner = traxon.online_learner(net, "d_rtrl", loss=exploding)
nan_learner.init_state(2)
nan_learner.step(x, y)""",
                "A loss, a gradient, the updated weights or the optimiser state was NaN/Inf "
                "(`on_nonfinite='raise'`). Nothing of the call is applied: the learner's state "
                "is the one before it.",
                "Lower the learning rate, set `clip_norm`, or pass `on_nonfinite='skip'` to skip "
                "such updates (counted in `state.skipped`).",
            ),
        ],
    ),
    (
        "Checkpoints",
        "",
        NET
        + """\
learner = traxon.online_learner(net, "d_rtrl")
learner.init_state(batch_size=2)
path = learner.save("run/ckpt.npz")
""",
        [
            (
                "Saving a state that holds NaN/Inf",
                """\
broken = traxon.online_learner(net, "d_rtrl")
ls = broken.init(batch_size=2)
broken.state = ls._replace(params={**ls.params, "x->h": ls.params["x->h"] * jnp.nan})
broken.save("run/broken.npz")""",
                "Some weight, optimiser state or trace of the learner is NaN/Inf: the checkpoint "
                "could not continue training.",
                "Restore an earlier checkpoint; pass `allow_nonfinite=True` to keep it for "
                "debugging.",
            ),
            (
                "No file",
                'learner.restore("run/missing.npz")',
                "Nothing at that path (`.npz` is appended when missing).",
                "Check the path.",
            ),
            (
                "Not a checkpoint",
                """\
with open(path, "rb") as f:
    head = f.read(200)
with open("run/cut.npz", "wb") as f:
    f.write(head)  # a checkpoint cut short
learner.restore("run/cut.npz")""",
                "The file is not a NumPy archive written by traxon (or it was cut short, or is "
                "empty). Every such file raises `traxon.CheckpointError`, a `ValueError`.",
                "Point to a file written by `save`; writes are atomic, so the previous "
                "checkpoint survives a crash.",
            ),
            (
                "Checkpoint of another network or algorithm",
                """\
other = traxon.online_learner(net, "es_d_rtrl")
other.restore(path)""",
                "The checkpoint's fingerprint (network structure, neuron and synapse parameters, "
                "weight ops, algorithm, loss) differs from this learner's; what differs is "
                "listed, one line each.",
                "Restore into a learner built like the one that saved it.",
            ),
            (
                "A checkpoint of other neuron parameters",
                """\
slower = Network(3, {"h": Population(LIF(tau=30.0), 4)}, [Projection("x", "h", Dense(3.0))],
                 readout=Readout("h", 2))
traxon.online_learner(slower, "d_rtrl").restore(path)""",
                "The same structure with other dynamics: the saved state and traces belong to "
                "the old ones.",
                "Build the network with the parameters it was saved with (or start afresh).",
            ),
            (
                "A damaged checkpoint",
                """\
arrays = dict(np.load(path))
arrays["leaf0"] = arrays["leaf0"] + 1  # other numbers in a sound archive
np.savez("run/edited.npz", **arrays)
learner.restore("run/edited.npz")""",
                "The file was changed after it was written (a bit flip on disk, an incomplete "
                "copy, an edit): the archive's own checks or the checkpoint's SHA-256 checksum "
                "fail.",
                "Restore an earlier copy.",
            ),
            (
                "Saving where a file is in the way",
                """\
with open("run/notes", "w") as f:
    f.write("a file, not a folder")
learner.save("run/notes/ckpt.npz")""",
                "A component of the path is a file, so the folder cannot be created.",
                "Save somewhere else, or move the file.",
            ),
            (
                "A pytree of another structure",
                'save_checkpoint("run/tree.npz", {"w": jnp.ones(3)})\n'
                'load_checkpoint("run/tree.npz", {"v": jnp.ones(3)})',
                "`load_checkpoint` reads into the structure of `like`; the leaf paths differ.",
                "Pass a `like` of the saved structure.",
            ),
            (
                "A leaf of another shape or dtype",
                'load_checkpoint("run/tree.npz", {"w": jnp.ones(4)})',
                "Same paths, different shape or dtype.",
                "Pass a `like` with the saved shapes and dtypes (e.g. the same batch size).",
            ),
        ],
    ),
    (
        "Tasks",
        "The tasks' arguments are checked with the same wording as the rest of the library.",
        "",
        [
            (
                "An integer argument is not an integer",
                "EvidenceAccumulation(n_cues=2.5)",
                "Counts (cues, channels, steps, batch sizes) are integers.",
                "Pass an int.",
            ),
            (
                "An integer argument is too small",
                "DelayedMatchToSample(n_directions=1)",
                "Below the allowed minimum shown.",
                "Pass a larger value.",
            ),
            (
                "An even number of cues",
                "EvidenceAccumulation(n_cues=4)",
                "The label is the majority side, so an even count could tie.",
                "Pass an odd number.",
            ),
            (
                "A number is not a number",
                'SpikingDigits(max_rate_hz="fast")',
                "A rate, duration or fraction is not numeric.",
                "Pass a number.",
            ),
            (
                "A number is out of range",
                "SpikingDigits(threshold=1.5)",
                "The message states the bound (`>=`, `>` or `<=`).",
                "Pass a value within it.",
            ),
            (
                "A duration is not a multiple of dt",
                "EvidenceAccumulation(cue_ms=2.5)",
                "Durations are whole numbers of steps.",
                "Round the duration or change `dt`.",
            ),
            (
                "A period shorter than one step",
                "EvidenceAccumulation(recall_ms=0.0)",
                "Cue and recall periods must last at least one step.",
                "Lengthen it.",
            ),
            (
                "A rate above one spike per step",
                "EvidenceAccumulation(cue_rate_hz=2000.0)",
                "`rate * dt / 1000` is a probability per step and must be <= 1.",
                "Lower the rate or `dt`.",
            ),
            (
                "Unknown encoding or split",
                'SpikingDigits().sample(0, 4, split="valid")',
                "Splits are `train` and `test`; digit encodings are `rate` and `latency`.",
                "Pass an allowed value.",
            ),
            (
                "A seed that is not an integer",
                'EvidenceAccumulation().sample("seed", 4)',
                "`sample` takes a `numpy.random.Generator` or a non-negative integer seed.",
                "Pass `np.random.default_rng(0)` or `0`.",
            ),
            (
                "A stream seeded with a Generator",
                "EvidenceAccumulation().stream(np.random.default_rng(0), 4)",
                "A stream owns its Generator so that it is reproducible from the seed alone.",
                "Pass an integer seed.",
            ),
            (
                "Unknown task",
                'get_task("mnist")',
                "The name is not a built-in task.",
                "Use a listed name, or build the task class yourself.",
            ),
            (
                "Test fraction of 1",
                "SpikingDigits(test_fraction=1.0)",
                "Every example would be held out.",
                "Pass a fraction in (0, 1), e.g. 0.2.",
            ),
            (
                "More readout steps than steps",
                "SpikingDigits(n_steps=20, readout_steps=30)",
                "The loss mask covers the last `readout_steps` steps of the sequence.",
                "Pass `readout_steps <= n_steps`.",
            ),
            (
                "Images of the wrong shape",
                "SpikingDigits().encode(np.zeros((2, 8, 8)))",
                "`encode` takes flattened 8x8 images, `(B, 64)`, intensities in [0, 1].",
                "Reshape to `(B, 64)`.",
            ),
            (
                "Minority cue probability above one half",
                "EvidenceAccumulation(minority_prob=0.7)",
                "The probability that a cue lands on the trial's unfavoured side is at most 0.5.",
                "Pass a value in [0, 0.5].",
            ),
            (
                "SHD file missing",
                'SpikingHeidelbergDigits(train_path="shd_train.h5")',
                "The Spiking Heidelberg Digits are not bundled; the loader reads the HDF5 files "
                "of Cramer et al. (2020).",
                "Download `shd_train.h5` (and `shd_test.h5`) and pass their paths.",
            ),
            (
                "SHD file that is not HDF5",
                """\
with open("download.h5", "w") as f:
    f.write("404 Not Found")  # a failed download
SpikingHeidelbergDigits(train_path="download.h5")""",
                "The file is empty, text, truncated or damaged: h5py cannot open it.",
                "Download the file again (`shd_train.h5.gz` unpacked with `gunzip`).",
            ),
            (
                "A connectome table without synapse counts",
                """\
with open("edges.csv", "w") as f:
    f.write("pre_root_id,post_root_id\\n1,2\\n")
traxon.connectome.load_edges("edges.csv", min_count=5)""",
                "`min_count` drops rows with fewer synapses, but the table has no count column "
                "(none of the usual names).",
                "Name the count column with `count_col=`, or drop `min_count`.",
            ),
            (
                "Neuron ids beyond 64 bits",
                """\
with open("edges.csv", "w") as f:
    f.write("pre_root_id,post_root_id\\n1,18446744073709551616\\n")
traxon.connectome.load_edges("edges.csv")""",
                "Ids are kept as 64-bit integers (int64, or uint64 when an id exceeds int64).",
                "Renumber the neurons, or check that the column holds ids.",
            ),
        ],
    ),
    (
        "Recipes and command line",
        "",
        "",
        [
            (
                "Unknown recipe",
                'traxon.recipes.recipe("mnist")',
                "Recipes exist for the built-in tasks only.",
                "Use a listed task, or build network and learner yourself.",
            ),
            (
                "A network without neurons",
                "traxon.recipes.recurrent_network(40, 2, n_lif=0, n_alif=0)",
                "`n_lif + n_alif` must be positive.",
                "Ask for some neurons.",
            ),
            (
                "Malformed --task-option",
                'traxon.cli.main(["train", "--task-option", "delay_ms"])',
                "Task options are `KEY=VALUE` pairs (values are parsed as JSON when they can be).",
                "Write `--task-option delay_ms=500`.",
            ),
            (
                "An option the learning rule does not have",
                'traxon.cli.main(["train", "--algorithm", "es_d_rtrl", '
                '"--algorithm-option", "dekay=0.9"])',
                "`--algorithm-option` goes to the rule's constructor; the message lists the "
                "options it has (`traxon train --help` lists them for every rule).",
                "Write `--algorithm-option decay=0.9`.",
            ),
            (
                "SHD without data",
                'traxon.cli.main(["train", "--task", "shd"])',
                "The SHD files are not bundled.",
                "Pass `--data shd_train.h5 --test-data shd_test.h5`.",
            ),
        ],
    ),
    (
        "brainstate and brainpy.state modules",
        "An unmodified brainstate / brainpy.state module is read by `traxon.adapters.adapt` "
        "(which `online_learner(module, input_size=...)` calls). What cannot be traced is "
        "refused with the module, state or weight named; see [brainstate and brainpy.state]"
        "(brainstate.md). The snippets use these modules:",
        """\
import brainevent, brainpy.state as bps, brainstate, braintools
from traxon.adapters import adapt

brainevent.config.set_backend("cpu", "jax_raw")
brainstate.environ.set(dt=1.0 * u.ms)


def lif(n):
    return bps.LIF(n, tau=10 * u.ms, V_th=1 * u.mV, V_reset=0 * u.mV, V_rest=0 * u.mV)


def expon_proj(comm, n, post):
    return bps.AlignPostProj(comm=comm, syn=bps.Expon.desc(n, tau=5 * u.ms),
                             out=bps.CUBA.desc(scale=u.volt), post=post)


class Net(brainstate.nn.Module):  # 3 inputs -> 4 LIF -> 2 outputs
    def __init__(self):
        super().__init__()
        self.neu = lif(4)
        w = braintools.init.KaimingNormal(scale=10.0, unit=u.mS)
        self.inp = expon_proj(brainstate.nn.Linear(3, 4, w_init=w, b_init=None), 4, self.neu)
        self.out = bps.LeakyRateReadout(4, 2, tau=20 * u.ms)

    def update(self, x):
        self.inp(x)
        self.neu()
        return self.out(self.neu.get_spike())


class GapJunction(Net):  # each membrane pulled towards the population's mean
    def update(self, x):
        self.inp(x)
        v = self.neu.V.value
        self.neu.V.value = v + 0.1 * (u.math.mean(v, axis=-1, keepdims=True) - v)
        self.neu()
        return self.out(self.neu.get_spike())


class Pooled(Net):  # one weighted sum over the inputs, broadcast to every neuron
    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.ones((3,)))
        self.pool = bps.CurrentProj(comm=lambda x: x, out=bps.CUBA(scale=u.volt), post=self.neu)

    def update(self, x):
        drive = jnp.sum(x * self.w.value, axis=-1, keepdims=True) * jnp.ones((1, 4))
        self.pool(drive * u.mS)
        self.neu()
        return self.out(self.neu.get_spike())


class SharedWeight(Net):  # recurrent EventFixedProb with one weight for all connections
    def __init__(self):
        super().__init__()
        self.rec = expon_proj(
            brainstate.nn.EventFixedProb(4, 4, conn_num=0.5, conn_weight=0.5 * u.mS), 4, self.neu
        )

    def update(self, x):
        self.rec(self.neu.get_spike() != 0.0)
        return super().update(x)


def build(cls):
    module = cls()
    brainstate.nn.init_all_states(module, batch_size=2)
    return module
""",
        [
            (
                "A wrong input_size",
                "traxon.online_learner(build(Net), input_size=0)",
                "`input_size` (the input channels per sample) must be a positive integer.",
                "Pass the right number, or leave it out: it is read from the module's first layer.",
            ),
            (
                "Something else than a module",
                "adapt(object(), input_size=3)",
                "`adapt` reads a `brainstate.nn.Module`.",
                "Pass the module (for a traxon network, no adapter is needed).",
            ),
            (
                "Neurons coupled without a weight",
                'traxon.online_learner(build(GapJunction), "es_d_rtrl", input_size=3)',
                "A term inside the transition couples different neurons (a gap junction, a "
                "population mean); per-neuron eligibility traces would be wrong. It is found "
                "by a forward-mode probe of each population's step when an online rule is "
                "attached.",
                'Express the coupling through a weight, or train with `algorithm="bptt"` or '
                '`"rtrl"`, which train this network (tested).',
            ),
            (
                "A weight not aligned to neurons",
                "adapt(build(Pooled), input_size=3)",
                "The weight's output is not indexed by postsynaptic neuron (here a sum over "
                "the inputs broadcast to every neuron).",
                "Apply the weight with a matmul, an element-wise product or a bias, so that "
                "each neuron receives its own weighted input.",
            ),
            (
                "D-RTRL with a shared EventFixedProb weight",
                'traxon.online_learner(build(SharedWeight), "d_rtrl", input_size=3)',
                "With a scalar `conn_weight` every connection shares one number, and the "
                "kernel does not say which neuron each one drives; D-RTRL keeps a trace per "
                "connection and needs that.",
                'Use `"es_d_rtrl"` or `"bptt"`, or give `EventFixedProb` per-connection weights.',
            ),
            (
                "States replaced after attaching",
                "module = build(Net)\n"
                'attached = traxon.online_learner(module, "es_d_rtrl", input_size=3)\n'
                'weight = {"weight": jnp.ones((3, 4)) * u.mS}\n'
                "module.inp.comm.weight = brainstate.ParamState(weight)  # a new state object\n"
                "attached.step(np.ones((2, 3)), np.array([0, 1]))",
                "The learner trains the module's own `ParamState` objects; one was replaced (or "
                "`init_all_states` re-created them), so the learner would train a detached copy. "
                "Assigning a new *value* to a state is fine: the learner follows it.",
                "Attach a new learner to the module.",
            ),
        ],
    ),
    (
        "Optional dependencies",
        'Plots, progress bars and two tasks need extras (`pip install "traxon[examples]"`). '
        "The snippets hide an installed package to show the message (`learner` as in the "
        "previous sections).",
        "import sys\n",
        [
            (
                "matplotlib missing",
                'sys.modules["matplotlib"] = None  # as if not installed\n'
                "traxon.plot.raster(np.zeros((5, 1, 2)))",
                "`traxon.plot` needs matplotlib.",
                'pip install "traxon[examples]"',
            ),
            (
                "tqdm missing",
                'sys.modules["tqdm.auto"] = None  # as if not installed\n'
                "learner.fit([], progress=True)",
                "`fit(progress=True)` and the command line draw a tqdm bar.",
                'pip install "traxon[examples]", or `progress=False`.',
            ),
            (
                "h5py missing",
                'sys.modules["h5py"] = None  # as if not installed\n'
                'traxon.tasks.write_shd_file("x.h5", [], [], [])',
                "Reading and writing SHD files needs h5py.",
                'pip install "traxon[examples]"',
            ),
        ],
    ),
]

# Snippets that need the objects of an earlier section reuse them through this map.
_NEEDS = {"Optional dependencies": "The learner's data"}


def _run(code: str, namespace: dict[str, Any]) -> str:
    """Run a snippet; return the message of the error traxon raised (anything else fails)."""
    try:
        exec(compile(code, "<snippet>", "exec"), namespace)
    except (Exception, SystemExit) as err:
        frames = traceback.extract_tb(err.__traceback__)
        where = Path(frames[-1].filename).resolve()
        if _package() not in where.parents:
            raise AssertionError(f"this snippet failed outside traxon ({where}):\n{code}") from err
        # Object addresses differ from run to run; the page must not.
        return re.sub(r"0x[0-9a-fA-F]+", "0x...", f"{type(err).__name__}: {err}")
    raise AssertionError(f"this snippet raised nothing:\n{code}")


def _package() -> Path:
    import traxon

    return Path(traxon.__file__).resolve().parent


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def render() -> str:
    """Run every case and return the page."""
    import matplotlib

    matplotlib.use("Agg")
    saved_modules = dict(sys.modules)
    out = [HEADER.format(preamble=PREAMBLE)]
    namespaces: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for title, intro, setup, cases in SECTIONS:
                ns: dict[str, Any] = {}
                exec(PREAMBLE, ns)
                if title in _NEEDS:
                    ns.update(namespaces[_NEEDS[title]])
                if setup:
                    exec(setup, ns)
                namespaces[title] = ns
                out.append(f"\n## {title}\n")
                if intro:
                    out.append("\n" + textwrap.fill(intro, 92) + "\n")
                if setup:
                    out.append(f"\n```python\n{setup}```\n")
                for case, code, cause, fix in cases:
                    message = _run(code, ns)
                    out.append(
                        f"\n### {case}\n\n```python\n{code}\n```\n\n```text\n{message}\n```\n"
                    )
                    out.append("\n" + textwrap.fill(f"**Cause.** {cause}", 92) + "\n")
                    out.append("\n" + textwrap.fill(f"**Fix.** {fix}", 92) + "\n")
        finally:
            os.chdir(cwd)
            for name in [m for m in sys.modules if m not in saved_modules]:
                del sys.modules[name]
            sys.modules.update(saved_modules)
    return "".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    try:
        page = render()
    except Exception:
        traceback.print_exc()
        return 2
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(f"{PAGE} is out of date: run `python docs/make_errors.py`.")
            return 1
        print(f"{PAGE} is up to date.")
        return 0
    PAGE.write_text(page)
    print("wrote", PAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
