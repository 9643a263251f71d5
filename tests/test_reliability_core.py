"""Bad input to the core, checkpoints, connectome tables and SHD files: a clear error (or
warning) naming the argument, before any work."""

from __future__ import annotations

import numpy as np
import pytest

import traxon
from traxon.core import ALIF, LIF, Dense, Network, Population, Projection, Readout

# -------------------------------------------------------------------------------------
# Core: networks and neurons.


def test_network_without_populations_is_refused():
    with pytest.raises(ValueError, match="no population"):
        Network(3, {}, [])
    # A readout alone is a population: that network is fine.
    net = Network(3, {}, [], readout=Readout("x", 2))
    assert list(net.populations) == ["readout"]


def test_zero_resistance_warns():
    with pytest.warns(traxon.TraxonWarning, match="`R` = 0"):
        LIF(R=0)
    with pytest.warns(traxon.TraxonWarning, match="`R` = 0 for 1 of its neurons"):
        ALIF(R=np.array([1.0, 0.0]))


@pytest.mark.parametrize("value", ["10", ["10", "20"], [True, False], [[1.0], [2.0, 3.0]]])
def test_non_numeric_parameter_names_it(value):
    with pytest.raises(TypeError, match="`tau` must be a number"):
        LIF(tau=value)


def test_per_neuron_parameter_of_wrong_length_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"4 neurons, but `neuron.tau` has shape \(5,\)"):
        Population(LIF(tau=np.full(5, 10.0)), 4)
    Population(LIF(tau=np.full(4, 10.0)), 4)  # one per neuron: fine
    pop = Population(LIF(tau=np.full(4, 10.0)), 4)
    object.__setattr__(pop, "size", 5)  # past the Population's own check
    with pytest.raises(ValueError, match="population `h` has 5 neurons"):
        Network(3, {"h": pop}, [Projection("x", "h", Dense())])


@pytest.mark.parametrize("size", [True, 2.0])
def test_population_size_must_be_an_int(size):
    with pytest.raises(ValueError, match="`size` must be a positive integer"):
        Population(LIF(), size)
    with pytest.raises(ValueError, match="`size` must be a positive integer"):
        Readout("h", size)


@pytest.mark.parametrize("delay", [True, 1.0])
def test_delay_must_be_an_int(delay):
    with pytest.raises(ValueError, match="`delay` must be 0 or 1"):
        Projection("h", "h", delay=delay)


def test_bool_sizes_are_refused():
    with pytest.raises(ValueError, match="input `x` must have a positive integer size"):
        Network(True, {"h": Population(LIF(), 2)}, [])
    net = Network(np.int64(3), {"h": Population(LIF(), 2)}, [Projection("x", "h")])
    assert net.inputs == {"x": 3} and type(net.inputs["x"]) is int
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        net.init_state(True)
