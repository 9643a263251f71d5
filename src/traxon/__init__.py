"""traxon: linear-memory online learning for spiking neural networks in JAX.

Build a network from neurons and synaptic projections (:mod:`traxon.core`), attach
:func:`online_learner`, and it learns while it runs: eligibility traces are carried forward
with forward-mode Jacobian-vector products (:mod:`traxon.trace`), so memory stays constant
in the length of the run.
"""

from traxon import adapters as adapters  # `traxon.adapters` after `import traxon` (no brainpy)
from traxon import (
    connectome,
    core,
    diagnostics,
    learn,
    parallel,
    plot,
    recipes,
    tasks,
    trace,
)
from traxon._checks import TraxonWarning
from traxon.core import ALIF, LIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.learn import (
    CheckpointError,
    LearnerState,
    OnlineLearner,
    load_checkpoint,
    online_learner,
    save_checkpoint,
)
from traxon.trace import bptt, bptt_gradient, d_rtrl, es_d_rtrl, get_algorithm, rtrl

# The learner accepts brainstate modules through the adapter's reader, registered here: the
# learner and the adapter stand side by side on the core and do not import each other.
learn.learner.register_model_reader(adapters.read_model)

__version__ = "0.1.0"

__all__ = [
    "ALIF",
    "LIF",
    "CheckpointError",
    "Dense",
    "Expon",
    "LearnerState",
    "Network",
    "OnlineLearner",
    "Population",
    "Projection",
    "Readout",
    "TraxonWarning",
    "__version__",
    "bptt",
    "bptt_gradient",
    "connectome",
    "core",
    "d_rtrl",
    "diagnostics",
    "es_d_rtrl",
    "get_algorithm",
    "learn",
    "load_checkpoint",
    "online_learner",
    "parallel",
    "plot",
    "recipes",
    "rtrl",
    "save_checkpoint",
    "tasks",
    "trace",
]
