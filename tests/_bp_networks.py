"""brainpy.state networks written the way brainpy.state's documentation and examples write
them (sizes made tiny), shared by the adapter's tests (tests/test_adapter_battery.py runs all
of them, tests/test_adapter.py some): users' code, not trimmed for traxon.

Import it after ``pytest.importorskip("brainpy.state")`` (it needs brainpy.state,
brainstate, braintools, brainunit and brainevent).
"""

from __future__ import annotations

import brainpy.state as bps
import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np

N_IN = 6  # input channels of every network unless given


def mantissas_by_leaf(grads) -> dict:
    """``{(state path, leaf key): gradient}`` of brainstate's gradients (dicts of states'
    leaves, Quantities or arrays), as float arrays without units."""
    out = {}
    for path, value in grads.items():
        for key, leaf in jax.tree_util.tree_flatten_with_path(
            value, is_leaf=lambda v: isinstance(v, u.Quantity)
        )[0]:
            out[(path, jax.tree_util.keystr(key))] = np.asarray(u.get_mantissa(leaf))
    return out


class EpropALIF(brainstate.nn.Module):
    """e-prop-style recurrent adaptive LIF network with a leaky rate readout."""

    def __init__(self, n_in=N_IN, n_rec=10, n_out=2):
        super().__init__()
        self.neu = bps.ALIF(
            n_rec,
            tau=20.0 * u.ms,
            tau_a=200.0 * u.ms,
            beta=0.5 * u.mV,
            V_th=1.0 * u.mV,
            V_reset=0.0 * u.mV,
            V_rest=0.0 * u.mV,
            spk_fun=braintools.surrogate.ReluGrad(),
        )
        self.i2r = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_in,
                n_rec,
                w_init=braintools.init.KaimingNormal(scale=20.0, unit=u.mS),
                b_init=braintools.init.ZeroInit(unit=u.mS),
            ),
            syn=bps.Expon.desc(n_rec, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.r2r = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_rec,
                n_rec,
                w_init=braintools.init.KaimingNormal(scale=2.0, unit=u.mS),
                b_init=None,
            ),
            syn=bps.Expon.desc(n_rec, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.out = bps.LeakyRateReadout(n_rec, n_out, tau=20.0 * u.ms)

    def update(self, x):
        spk = self.neu.get_spike()
        self.i2r(x)
        self.r2r(spk)
        self.neu()
        return self.out(self.neu.get_spike())


class CobaEI(brainstate.nn.Module):
    """The COBA E/I network of brainpy.state's examples (LIFRef, conductance synapses,
    EventFixedProb, a random initial V) with an input layer and a readout of the E cells."""

    def __init__(self, n_in=N_IN, n_exc=12, n_inh=4):
        super().__init__()
        self.n_exc = n_exc
        self.n_inh = n_inh
        self.num = n_exc + n_inh
        self.N = bps.LIFRef(
            self.num,
            V_rest=-60.0 * u.mV,
            V_th=-50.0 * u.mV,
            V_reset=-60.0 * u.mV,
            tau=20.0 * u.ms,
            tau_ref=5.0 * u.ms,
            V_initializer=braintools.init.Normal(-55.0, 2.0, unit=u.mV),
            spk_fun=braintools.surrogate.ReluGrad(),
        )
        self.inp = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_in,
                self.num,
                w_init=braintools.init.KaimingNormal(scale=40.0, unit=u.mS),
                b_init=None,
            ),
            syn=bps.Expon.desc(self.num, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.N,
        )
        self.E = bps.AlignPostProj(
            comm=brainstate.nn.EventFixedProb(
                self.n_exc, self.num, conn_num=0.3, conn_weight=0.6 * u.mS
            ),
            syn=bps.Expon.desc(self.num, tau=5.0 * u.ms),
            out=bps.COBA.desc(E=0.0 * u.mV),
            post=self.N,
        )
        self.I = bps.AlignPostProj(
            comm=brainstate.nn.EventFixedProb(
                self.n_inh, self.num, conn_num=0.3, conn_weight=6.7 * u.mS
            ),
            syn=bps.Expon.desc(self.num, tau=10.0 * u.ms),
            out=bps.COBA.desc(E=-80.0 * u.mV),
            post=self.N,
        )
        self.out = bps.LeakyRateReadout(self.n_exc, 2, tau=20.0 * u.ms)

    def update(self, x):
        spk = self.N.get_spike() != 0.0
        self.E(spk[:, : self.n_exc])
        self.I(spk[:, self.n_exc :])
        self.inp(x)
        self.N()
        return self.out(self.N.get_spike()[:, : self.n_exc])


class TwoLayer(brainstate.nn.Module):
    """Linear (bias) -> LIF -> Linear (bias) -> LIF -> leaky readout."""

    def __init__(self, n_in=N_IN, n_hid=10, n_out=2):
        super().__init__()
        self.l1 = brainstate.nn.Linear(
            n_in,
            n_hid,
            w_init=braintools.init.KaimingNormal(scale=40.0, unit=u.mA),
            b_init=braintools.init.ZeroInit(unit=u.mA),
        )
        self.lif1 = bps.LIF(
            n_hid, tau=5.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.l2 = brainstate.nn.Linear(
            n_hid,
            n_hid,
            w_init=braintools.init.KaimingNormal(scale=40.0, unit=u.mA),
            b_init=braintools.init.ZeroInit(unit=u.mA),
        )
        self.lif2 = bps.LIF(
            n_hid, tau=5.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.out = bps.LeakyRateReadout(n_hid, n_out, tau=10.0 * u.ms)

    def update(self, x):
        return self.out(self.lif2(self.l2(self.lif1(self.l1(x)))))


class NoisyTwoLayer(TwoLayer):
    """The two-layer network with background noise on its first layer's membranes, drawn
    from brainstate's global random state each step: a ``PoissonInput`` of 200 sources at
    50 Hz, 0.1 mV each, as brainpy.state's ``PoissonInput`` docstring adds it (the target
    given as ``prefetch('V')``; the docstring's plain state fails in brainpy.state)."""

    def __init__(self, n_in=N_IN, n_hid=10, n_out=2):
        super().__init__(n_in, n_hid, n_out)
        self.noise = bps.PoissonInput(
            self.lif1.prefetch("V"),
            indices=None,
            num_input=200,
            freq=50 * u.Hz,
            weight=0.1 * u.mV,
        )

    def update(self, x):
        self.noise()
        return super().update(x)


class EncodedTwoLayer(TwoLayer):
    """The two-layer network given rates (Hz) and encoding them as spikes itself, with
    brainpy.state's ``PoissonEncoder`` (not supported: a weight then reads a transformed
    input)."""

    def __init__(self, n_in=N_IN, n_hid=10, n_out=2):
        super().__init__(n_in, n_hid, n_out)
        self.enc = bps.PoissonEncoder(n_in)

    def update(self, rates):
        return super().update(self.enc(rates * u.Hz))


def two_layer_sequential(n_in=N_IN, n_hid=10, n_out=2):
    """The same network as a ``brainstate.nn.Sequential``."""
    return brainstate.nn.Sequential(
        brainstate.nn.Linear(
            n_in,
            n_hid,
            w_init=braintools.init.KaimingNormal(scale=40.0, unit=u.mA),
            b_init=braintools.init.ZeroInit(unit=u.mA),
        ),
        bps.LIF(n_hid, tau=5.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()),
        brainstate.nn.Linear(
            n_hid,
            n_hid,
            w_init=braintools.init.KaimingNormal(scale=40.0, unit=u.mA),
            b_init=braintools.init.ZeroInit(unit=u.mA),
        ),
        bps.LIF(n_hid, tau=5.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()),
        bps.LeakyRateReadout(n_hid, n_out, tau=10.0 * u.ms),
    )


class SurrogateTutorial(brainstate.nn.Module):
    """brainpy.state's surrogate-gradient example network (``examples_state/
    200_surrogate_grad_lif.py``), as written: Linear (bias, in mA) + Expon -> LIF ->
    Linear -> Expon output."""

    def __init__(self, num_in=N_IN, num_rec=8, num_out=2):
        super().__init__()
        self.num_in = num_in
        self.num_rec = num_rec
        self.num_out = num_out
        scale = 7 * (1 - (u.math.exp(-brainstate.environ.get_dt() / (1 * u.ms))))
        self.i2r = brainstate.nn.Sequential(
            brainstate.nn.Linear(
                num_in,
                num_rec,
                w_init=braintools.init.KaimingNormal(scale=scale, unit=u.mA),
                b_init=braintools.init.ZeroInit(unit=u.mA),
            ),
            bps.Expon(num_rec, tau=5.0 * u.ms, g_initializer=braintools.init.Constant(0.0 * u.mA)),
        )
        self.r = bps.LIF(
            num_rec,
            tau=20 * u.ms,
            V_reset=0 * u.mV,
            V_rest=0 * u.mV,
            V_th=1.0 * u.mV,
            spk_fun=braintools.surrogate.ReluGrad(),
        )
        self.r2o = brainstate.nn.Linear(num_rec, num_out, w_init=braintools.init.KaimingNormal())
        self.o = bps.Expon(num_out, tau=10.0 * u.ms, g_initializer=braintools.init.Constant(0.0))

    def update(self, spike):
        return self.o(self.r2o(self.r(self.i2r(spike))))


class AlignPre(brainstate.nn.Module):
    """AlignPre in its working form: an Expon trace per presynaptic neuron, then a
    CurrentProj (what ``align_pre_projection`` composes; see docs/brainstate.md)."""

    def __init__(self, n_in=N_IN, n_pre=8, n_post=6, scale=20.0):
        super().__init__()
        self.pre = bps.LIF(
            n_pre,
            tau=10 * u.ms,
            V_th=1 * u.mV,
            V_reset=0 * u.mV,
            V_rest=0 * u.mV,
            spk_fun=braintools.surrogate.ReluGrad(),
        )
        self.post = bps.LIF(
            n_post,
            tau=10 * u.ms,
            V_th=1 * u.mV,
            V_reset=0 * u.mV,
            V_rest=0 * u.mV,
            spk_fun=braintools.surrogate.ReluGrad(),
        )
        self.inp = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_in,
                n_pre,
                w_init=braintools.init.KaimingNormal(scale=40.0, unit=u.mS),
                b_init=None,
            ),
            syn=bps.Expon.desc(n_pre, tau=5 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.pre,
        )
        self.trace = bps.Expon(n_pre, tau=5 * u.ms, g_initializer=braintools.init.Constant(0.0))
        self.a2b = bps.CurrentProj(
            comm=brainstate.nn.Linear(
                n_pre,
                n_post,
                w_init=braintools.init.KaimingNormal(scale=scale, unit=u.mS),
                b_init=None,
            ),
            out=bps.CUBA(scale=u.volt),
            post=self.post,
        )
        self.out = bps.LeakyRateReadout(n_post, 2, tau=20 * u.ms)

    def update(self, x):
        self.inp(x)
        spikes = self.pre()
        self.a2b(self.trace(spikes))
        self.post()
        return self.out(self.post.get_spike())


class ShortTermPlasticity(AlignPre):
    """AlignPre with short-term plasticity between the presynaptic spikes and their trace,
    with the parameters of brainpy.state's ``STD`` and ``STP`` docstrings: ``kind="STD"``
    (depression) or ``"STP"`` (facilitation and depression; it releases a tenth of what
    depression alone does at first, so its weights are five times larger)."""

    def __init__(self, kind="STD", n_in=N_IN, n_pre=8, n_post=6):
        super().__init__(n_in, n_pre, n_post, scale=20.0 if kind == "STD" else 100.0)
        if kind == "STD":
            self.stp = bps.STD(n_pre, tau=200.0 * u.ms, U=0.07)
        else:
            self.stp = bps.STP(n_pre, U=0.1, tau_f=1500.0 * u.ms, tau_d=200.0 * u.ms)

    def update(self, x):
        self.inp(x)
        spikes = self.pre()
        self.a2b(self.trace(self.stp(spikes)))
        self.post()
        return self.out(self.post.get_spike())


class Currents(brainstate.nn.Module):
    """Units in parameters and in the input: the input is a current in nA."""

    def __init__(self, n_in=N_IN, n=8):
        super().__init__()
        self.w = brainstate.nn.Linear(
            n_in, n, w_init=braintools.init.KaimingNormal(scale=10.0), b_init=None
        )
        self.neu = bps.LIF(
            n,
            R=1.0 * u.Mohm,
            tau=10.0 * u.ms,
            V_th=1.0 * u.mV,
            V_reset=0.0 * u.mV,
            V_rest=0.0 * u.mV,
            V_initializer=braintools.init.Uniform(0.0, 0.5, unit=u.mV),
            spk_fun=braintools.surrogate.ReluGrad(),
        )
        self.out = bps.LeakyRateReadout(n, 2, tau=20.0 * u.ms)

    def update(self, current):
        self.neu(self.w(current))
        return self.out(self.neu.get_spike())


class CubaEI(brainstate.nn.Module):
    """The CUBA E/I network of brainpy.state's examples: E and I cells project through
    ``EventFixedProb`` with one weight per connection (an initializer as ``conn_weight``),
    current-based ``Expon`` synapses, a random initial V; readout of the E cells."""

    def __init__(self, n_in=N_IN, n_exc=12, n_inh=4):
        super().__init__()
        self.n_exc = n_exc
        self.num = n_exc + n_inh
        self.N = bps.LIF(
            self.num,
            V_rest=-49.0 * u.mV,
            V_th=-50.0 * u.mV,
            V_reset=-60.0 * u.mV,
            tau=20.0 * u.ms,
            V_initializer=braintools.init.Normal(-55.0, 2.0, unit=u.mV),
            spk_fun=braintools.surrogate.ReluGrad(),
        )
        self.inp = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_in,
                self.num,
                w_init=braintools.init.KaimingNormal(scale=20.0, unit=u.mS),
                b_init=None,
            ),
            syn=bps.Expon.desc(self.num, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.N,
        )
        self.E = bps.AlignPostProj(
            comm=brainstate.nn.EventFixedProb(
                n_exc,
                self.num,
                conn_num=0.3,
                conn_weight=braintools.init.Normal(1.6 * u.mS, 0.2 * u.mS),
            ),
            syn=bps.Expon.desc(self.num, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.N,
        )
        self.I = bps.AlignPostProj(
            comm=brainstate.nn.EventFixedProb(
                n_inh,
                self.num,
                conn_num=0.3,
                conn_weight=braintools.init.Normal(-9.0 * u.mS, 1.0 * u.mS),
            ),
            syn=bps.Expon.desc(self.num, tau=10.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.N,
        )
        self.out = bps.LeakyRateReadout(n_exc, 2, tau=20.0 * u.ms)

    def update(self, x):
        spk = self.N.get_spike()
        self.E(spk[:, : self.n_exc])
        self.I(spk[:, self.n_exc :])
        self.inp(x)
        self.N()
        return self.out(self.N.get_spike()[:, : self.n_exc])


class FixedNumRecurrent(brainstate.nn.Module):
    """A recurrent LIF layer whose recurrent weights are ``FixedNumConn`` (three inputs per
    neuron, one weight per connection), written as brainstate documents the layer."""

    def __init__(self, n_in=N_IN, n=12):
        super().__init__()
        self.neu = bps.LIF(
            n, tau=10.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.i2r = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_in,
                n,
                w_init=braintools.init.KaimingNormal(scale=30.0, unit=u.mS),
                b_init=braintools.init.ZeroInit(unit=u.mS),
            ),
            syn=bps.Expon.desc(n, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.r2r = bps.AlignPostProj(
            comm=brainstate.nn.FixedNumConn(
                n, n, conn_num=3, conn_weight=braintools.init.Normal(0.5 * u.mS, 0.2 * u.mS), seed=1
            ),
            syn=bps.Expon.desc(n, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.out = bps.LeakyRateReadout(n, 2, tau=20.0 * u.ms)

    def update(self, x):
        self.r2r(self.neu.get_spike())
        self.i2r(x)
        self.neu()
        return self.out(self.neu.get_spike())


class SparseRecurrent(brainstate.nn.Module):
    """A recurrent LIF layer whose recurrent weights are a ``SparseLinear`` over a
    ``brainevent.CSR`` matrix (only its non-zeros are weights)."""

    def __init__(self, n_in=N_IN, n=12):
        super().__init__()
        import brainevent

        rng = np.random.default_rng(5)
        dense = (rng.random((n, n)) < 0.3) * rng.normal(0.5, 0.2, (n, n))
        self.neu = bps.LIF(
            n, tau=10.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.i2r = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_in,
                n,
                w_init=braintools.init.KaimingNormal(scale=30.0, unit=u.mS),
                b_init=braintools.init.ZeroInit(unit=u.mS),
            ),
            syn=bps.Expon.desc(n, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.r2r = bps.AlignPostProj(
            comm=brainstate.nn.SparseLinear(brainevent.CSR.fromdense(jnp.asarray(dense) * u.mS)),
            syn=bps.Expon.desc(n, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.out = bps.LeakyRateReadout(n, 2, tau=20.0 * u.ms)

    def update(self, x):
        self.r2r(self.neu.get_spike())
        self.i2r(x)
        self.neu()
        return self.out(self.neu.get_spike())


class HodgkinHuxley(brainstate.nn.Module):
    """Hodgkin-Huxley neurons with conductance-based synapses, as in brainpy's COBA-HH
    benchmark (Brette et al., 2007): excitatory input onto ``E = 0 mV``, inhibitory
    recurrence onto ``E = -80 mV``, non-negative conductances in uS (weights of order one).
    The neurons are used as brainpy.state's ``HH`` docstring uses them, ``spikes =
    hh.update(x)``: a rising edge, ``spike(V) * (1 - spike(V_last))``, that reads the
    membrane before and after its update. Recurrence (``recurrent=False`` leaves it out)
    reads ``get_spike()`` at the step's start; the readout reads the step's spikes.
    ``neuron``: ``bps.HH`` or another of its family (``MorrisLecar``, ``WangBuzsakiHH``);
    ``gain`` scales the conductances (for a membrane of another capacitance).
    """

    def __init__(self, n_in=N_IN, n_rec=8, n_out=2, recurrent=True, neuron=bps.HH, gain=1.0):
        super().__init__()
        self.recurrent = recurrent
        self.neu = neuron(n_rec)

        def coba(n_from, tau, E):
            return bps.AlignPostProj(
                comm=brainstate.nn.Linear(
                    n_from,
                    n_rec,
                    w_init=braintools.init.Uniform(0.0 * u.uS, 10.0 * gain * u.uS),
                    b_init=None,
                ),
                syn=bps.Expon.desc(n_rec, tau=tau),
                out=bps.COBA.desc(E=E),
                post=self.neu,
            )

        self.inp = coba(n_in, 5.0 * u.ms, 0.0 * u.mV)
        if recurrent:
            self.rec = coba(n_rec, 10.0 * u.ms, -80.0 * u.mV)
        self.out = bps.LeakyRateReadout(n_rec, n_out, tau=10.0 * u.ms)

    def update(self, x):
        if self.recurrent:
            self.rec(self.neu.get_spike())
        self.inp(x)
        return self.out(self.neu())


class PointNeurons(brainstate.nn.Module):
    """One of brainpy.state's point-neuron models (``neuron``, with its default parameters)
    in the e-prop layout: input and recurrence through ``Linear`` (bias, in mS) ->
    ``Expon`` -> ``CUBA``, the recurrence reading ``get_spike()`` at the step's start; the
    readout reads what the neurons' update returns. ``current``: the unit that turns the
    synapse's conductance (mS) into the neuron's input (mA by default; Izhikevich's is in
    mV/ms)."""

    def __init__(self, neuron, n_in=N_IN, n_rec=8, n_out=2, scale=100.0, current=u.volt):
        super().__init__()
        self.neu = neuron(n_rec, spk_fun=braintools.surrogate.ReluGrad())

        def linear(n_from):
            return brainstate.nn.Linear(
                n_from,
                n_rec,
                w_init=braintools.init.KaimingNormal(scale=scale, unit=u.mS),
                b_init=braintools.init.ZeroInit(unit=u.mS),
            )

        self.inp = bps.AlignPostProj(
            comm=linear(n_in),
            syn=bps.Expon.desc(n_rec, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=current),
            post=self.neu,
        )
        self.rec = bps.AlignPostProj(
            comm=linear(n_rec),
            syn=bps.Expon.desc(n_rec, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=current),
            post=self.neu,
        )
        self.out = bps.LeakyRateReadout(n_rec, n_out, tau=10.0 * u.ms)

    def update(self, x):
        self.rec(self.neu.get_spike())
        self.inp(x)
        return self.out(self.neu())


class AlignPreProjection(brainstate.nn.Module):
    """``align_pre_projection`` as brainpy.state documents it (an Expon on the presynaptic
    side): brainpy.state 0.1 fails on it in brainstate's own loop, before traxon is involved."""

    def __init__(self, n_pre=8, n_post=6):
        super().__init__()
        self.pre = bps.LIF(
            n_pre, tau=10 * u.ms, V_th=1 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.post = bps.LIF(
            n_post, tau=10 * u.ms, V_th=1 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.a2b = bps.align_pre_projection(
            self.pre,
            syn=bps.Expon(n_pre, tau=5 * u.ms),
            comm=brainstate.nn.Linear(
                n_pre, n_post, w_init=braintools.init.KaimingNormal(unit=u.mS), b_init=None
            ),
            out=bps.CUBA(scale=u.volt),
            post=self.post,
        )
        self.out = bps.LeakyRateReadout(n_post, 2, tau=20 * u.ms)

    def update(self, x):
        self.a2b(x * u.mA)
        self.post()
        return self.out(self.post.get_spike())


class CellNetwork(brainstate.nn.Module):
    """One of brainstate.nn's recurrent cells (``ValinaRNNCell``, ``LSTMCell``: their one
    weight on ``concatenate([x, h])``, feeding four gates in the LSTM, is split into blocks;
    ``GRUCell``, ``MGUCell``, ``URLSTMCell``: not supported), read by a leaky readout."""

    def __init__(self, cell, n_in=N_IN, n_rec=10, n_out=2):
        super().__init__()
        self.cell = getattr(brainstate.nn, cell)(n_in, n_rec)
        self.out = bps.LeakyRateReadout(n_rec, n_out, tau=10.0 * u.ms)

    def update(self, x):
        return self.out(self.cell(x))


class CellLinearReadout(brainstate.nn.Module):
    """A recurrent cell read by a ``Linear`` at every step, as brainstate's sequence
    models write it (``self.out(self.rnn(x))``): the output is no state of its own."""

    def __init__(self, cell="LSTMCell", n_in=N_IN, n_rec=10, n_out=2):
        super().__init__()
        self.rnn = getattr(brainstate.nn, cell)(n_in, n_rec)
        self.out = brainstate.nn.Linear(n_rec, n_out)

    def update(self, x):
        return self.out(self.rnn(x))


class CellDropoutReadout(CellLinearReadout):
    """``self.out(self.drop(self.rnn(x)))``: dropout between the cell and its readout, as
    brainstate's sequence models add it for training (``environ.context(fit=True)``)."""

    def __init__(self, cell="LSTMCell", n_in=N_IN, n_rec=10, n_out=2):
        super().__init__(cell, n_in, n_rec, n_out)
        self.drop = brainstate.nn.Dropout(0.9)

    def update(self, x):
        return self.out(self.drop(self.rnn(x)))


class SpikingLinearReadout(TwoLayer):
    """The two-layer network with its leaky readout replaced by a ``Linear`` of the last
    layer's spikes (logits at every step, the output no state of its own)."""

    def __init__(self, n_in=N_IN, n_hid=10, n_out=2):
        super().__init__(n_in, n_hid, n_out)
        self.out = brainstate.nn.Linear(n_hid, n_out)


class LinearReadoutLIF(brainstate.nn.Module):
    """``Linear`` -> ``LIF`` -> ``Linear``: one population read by a ``Linear``."""

    def __init__(self, n_in=N_IN, n_hid=10, n_out=2):
        super().__init__()
        self.l1 = brainstate.nn.Linear(
            n_in, n_hid, w_init=braintools.init.KaimingNormal(scale=40.0, unit=u.mA), b_init=None
        )
        self.lif = bps.LIF(
            n_hid, tau=5.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.out = brainstate.nn.Linear(n_hid, n_out)

    def update(self, x):
        return self.out(self.lif(self.l1(x)))


class HybridEncoder(brainstate.nn.Module):
    """An ANN encoder (``Sequential(Linear, ReLU)``) in front of a spiking layer: the
    encoder's output is a weight's input computed from a weight's output alone."""

    def __init__(self, n_in=N_IN, n_enc=16, n_hid=8, n_out=2):
        super().__init__()
        self.enc = brainstate.nn.Sequential(brainstate.nn.Linear(n_in, n_enc), brainstate.nn.ReLU())
        self.l1 = brainstate.nn.Linear(
            n_enc,
            n_hid,
            w_init=braintools.init.KaimingNormal(scale=40.0, unit=u.mA),
            b_init=braintools.init.ZeroInit(unit=u.mA),
        )
        self.lif = bps.LIF(
            n_hid, tau=5.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.out = bps.LeakyRateReadout(n_hid, n_out, tau=10.0 * u.ms)

    def update(self, x):
        return self.out(self.lif(self.l1(self.enc(x))))


class BraintraceRSNN(brainstate.nn.Module):
    """The recurrent LIF network as braintrace's examples write it, with braintrace's own
    layers: ``AlignPostProj(comm=braintrace.nn.Linear(n_in + n_rec, n_rec), Expon, CUBA)`` on
    ``concatenate([x, spikes])`` and a ``braintrace.nn.LeakyRateReadout``."""

    def __init__(self, n_in=N_IN, n_rec=8, n_out=2):
        import braintrace

        super().__init__()
        self.neu = bps.LIF(
            n_rec, tau=10.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.syn = bps.AlignPostProj(
            comm=braintrace.nn.Linear(
                n_in + n_rec,
                n_rec,
                w_init=braintools.init.KaimingNormal(scale=20.0, unit=u.mS),
                b_init=braintools.init.ZeroInit(unit=u.mS),
            ),
            syn=bps.Expon.desc(n_rec, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.out = braintrace.nn.LeakyRateReadout(n_rec, n_out, tau=10.0 * u.ms)

    def update(self, x):
        self.syn(jnp.concatenate([x, self.neu.get_spike()], axis=-1))
        self.neu()
        return self.out(self.neu.get_spike())


class BraintraceCell(brainstate.nn.Module):
    """braintrace's quickstart network (``self.out(self.rnn(x))`` with braintrace's
    layers), with an ``LSTMCell``: braintrace's ``GRUCell`` gates the state before its
    weight, which traxon refuses."""

    def __init__(self, cell="LSTMCell", n_in=N_IN, n_rec=8, n_out=2):
        import braintrace

        super().__init__()
        self.rnn = getattr(braintrace.nn, cell)(n_in, n_rec)
        self.out = braintrace.nn.Linear(n_rec, n_out)

    def update(self, x):
        return self.out(self.rnn(x))


class HandWrittenLSTM(brainstate.nn.Module):
    """An LSTM cell written by hand, as a user writes one: one ``Linear`` on
    ``concatenate([x, h])``, its gates taken by slicing (``g[:, :n]``, ...), read by a
    ``Linear``."""

    def __init__(self, n_in=N_IN, n=8, n_out=2):
        super().__init__()
        self.n = n
        self.W = brainstate.nn.Linear(n_in + n, 4 * n)
        self.h = brainstate.HiddenState(jnp.zeros((1, n)))
        self.c = brainstate.HiddenState(jnp.zeros((1, n)))
        self.out = brainstate.nn.Linear(n, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h.value = jnp.zeros((batch_size, self.n))
        self.c.value = jnp.zeros((batch_size, self.n))

    def update(self, x):
        n = self.n
        g = self.W(jnp.concatenate([x, self.h.value], axis=-1))
        i, f, o, c_in = g[:, :n], g[:, n : 2 * n], g[:, 2 * n : 3 * n], g[:, 3 * n :]
        c = jax.nn.sigmoid(f) * self.c.value + jax.nn.sigmoid(i) * jnp.tanh(c_in)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        self.c.value, self.h.value = c, h
        return self.out(h)


class EpropConcatenated(brainstate.nn.Module):
    """e-prop written with one Linear on ``concatenate([x, spk])`` (an input block and a
    recurrent block; its input size is not declared by any layer: ``input_size=``)."""

    def __init__(self, n_in=N_IN, n_rec=8):
        super().__init__()
        self.neu = bps.LIF(
            n_rec, tau=10.0 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad()
        )
        self.syn = bps.AlignPostProj(
            comm=brainstate.nn.Linear(
                n_in + n_rec,
                n_rec,
                w_init=braintools.init.KaimingNormal(scale=20.0, unit=u.mS),
                b_init=None,
            ),
            syn=bps.Expon.desc(n_rec, tau=5.0 * u.ms),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.out = bps.LeakyRateReadout(n_rec, 2, tau=20.0 * u.ms)

    def update(self, x):
        self.syn(jnp.concatenate([x, self.neu.get_spike()], axis=-1))
        self.neu()
        return self.out(self.neu.get_spike())
