r"""Train an unmodified brainstate / ``brainpy.state`` network: the module -> the model contract.

:func:`adapt` reads the module's step (``module.update(x)``) as a jaxpr and finds, without
any change to the user's code:

* the **weights**: every ``ParamState`` leaf (``Linear``'s ``weight`` and ``bias`` are two
  weights) and the equation that applies it to a presynaptic signal -- a dense matmul, an
  element-wise product, a bias addition, or brainevent's fixed-connectivity kernels
  (``EventFixedProb``);
* the **populations**: groups of hidden states that interact element-wise within the step
  once every weight's output is held fixed (a LIF's ``V`` and the ``g`` of the ``Expon``
  synapses aligned to it; an ``align_pre`` trace and its presynaptic neurons);
* the **signal** each weight reads (an input, or a population's spikes of this step or of
  the previous one) and the **readout**: the population the module's output is read from.

The result, an :class:`AdaptedNetwork`, is a :class:`~traxon.core.Network`: every learning
rule, the learner, checkpoints and the benchmarks work on it unchanged. States are
identified by object identity. Units are stripped to mantissas for the maths and restored
when weights are written back (:meth:`AdaptedNetwork.write_back`). ``dt`` comes from
``brainstate.environ``; the environment's ``i`` and ``t`` advance every step, and
brainstate's random state is threaded through the network state.

What cannot be traced raises an error naming the module or the weight and saying what to do:
a weight whose output is not aligned to neurons, a transition coupling different neurons
(gap junctions), a weight entering non-linearly, a weight shared by several operations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from traxon._module import static
from traxon.adapters import _prepare, _sparse, _spikes
from traxon.adapters._graph import Graph, Lit, Node, flatten
from traxon.adapters._keys import ENV, GLOBAL
from traxon.adapters._states import (
    BatchedStates,
    DrawnReset,
    batch_of,
    initial_values,
    shortest_paths,
)
from traxon.adapters._values import (
    brainstate,
    is_quantity,
    leaf_keys,
    leaves,
    mantissa,
    state_kind,
    unit_of,
)
from traxon.core.network import ONE, READOUT, Network, PopulationPlan, ProjectionPlan
from traxon.core.neurons import Neuron
from traxon.core.ops import WeightOp

__all__ = ["AdaptedNetwork", "adapt"]

_ELEMENTWISE = {
    "mul",
    "add",
    "sub",
    "neg",
    "abs",
    "sign",
    "convert_element_type",
    "exp",
    "log",
    "select_n",
    "max",
    "min",
    "div",
    "copy",
    "copy_p",
    "square",
    "sqrt",
    "integer_pow",
}
_LAYOUT = {"transpose", "reshape", "convert_element_type", "copy", "copy_p"}
# Fixed selections of a signal that may stand in front of a weight (part of its op).
_SELECT = _LAYOUT | {
    "slice",
    "squeeze",
    "expand_dims",
    "broadcast_in_dim",
    "gather",
    "dynamic_slice",
    "rev",
    "ne",
    "eq",
    "gt",
    "ge",
    "lt",
    "le",
    "mul",
    "concatenate",
}
_FIXED_CONN = _sparse.KNOWN  # brainevent's fixed-number and CSR kernels, brainunit's CSR


# --------------------------------------------------------------------------------------
# Weight ops (each one looks up the traced step of the batch size it is called with).


class AdaptedOp(WeightOp):
    """A module's weight application, read off its traced step.

    ``apply`` evaluates the module's own equations (or, for brainevent's binary kernels,
    an equivalent float kernel, so that filtered presynaptic traces can pass through it);
    ``outer`` is its vector-Jacobian product in the weight. ``pre_factor``/``to_params``
    (parameter-dimension traces) exist for dense, element-wise, bias and fixed-connectivity
    weights applied through an element-wise transform.
    """

    net: Any = static(default=None)
    name: str = static(default="")
    kind: str = static(default="")
    param_traces: bool = static(default=True)

    def _info(self, batch: int) -> _Op:
        return self.net.analysis(batch).ops[self.name]

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return self.net.weight_shapes[self.name]

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        info = self._info(z.shape[0])
        if info.fixed is not None:
            return info.fixed.apply(info.transform(W), _selected(info, z))
        a = self.net.analysis(z.shape[0])
        values = {info.param_id: W}
        if info.z_id is not None:
            values[info.z_id] = z.astype(a.graph.dtype(info.z_id))
        (u,), _ = a.graph.evaluate(values, [info.u_id])
        return jnp.broadcast_to(u, (z.shape[0], u.shape[-1]))  # a bias may be (1, N)

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        _, vjp = jax.vjp(lambda w: self.apply(w, pre.astype(W.dtype)), W)
        return vjp(post.astype(W.dtype))[0]

    def _slope(self, info: _Op, W: jax.Array) -> jax.Array:
        slope = jax.jvp(info.transform, (W,), (jnp.ones_like(W),))[1]
        if self.kind == "bias" and slope.shape != W.shape:  # broadcast over the batch
            slope = jnp.reshape(slope, (-1, *W.shape))[0]
        return slope

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        info = self._info(z.shape[0])
        slope = self._slope(info, W)
        z = _selected(info, z)
        if self.kind == "dense":
            return z[:, :, None] * slope[None]
        if self.kind == "elementwise":
            return z * jnp.reshape(slope, (1, -1))
        if self.kind == "bias":
            return jnp.broadcast_to(slope, (z.shape[0], *W.shape))
        assert info.fixed is not None
        return info.fixed.pre_factor(z) * slope[None]

    def to_params(self, x: jax.Array) -> jax.Array:
        if self.kind == "dense":
            return x[:, None]
        if self.kind in ("elementwise", "bias"):
            return x
        info = self._info(x.shape[0])
        assert info.fixed is not None
        return info.fixed.to_params(x)


_FixedConn = _sparse.SparseConn  # sparse connectivity as traxon's CSR op


def _selected(info: _Op, z: jax.Array) -> jax.Array:
    return z if info.select is None else info.select(z)


# --------------------------------------------------------------------------------------
# What one traced step tells us.


@dataclasses.dataclass
class _Leaf:
    state: Any
    path: str
    key: str
    kind: str
    unit: Any
    in_id: int
    out_id: int | Lit
    short: str = ""  # its name within its population (unique there)

    @property
    def name(self) -> str:
        return self.path + self.key


@dataclasses.dataclass
class _Op:
    name: str
    node: Node
    param_id: int
    kind: str
    u_id: int  # canonical (B, N) output
    raw_id: int  # the node's own output
    to_raw: Callable[[jax.Array], jax.Array]  # canonical u -> raw layout
    z_id: int | None  # canonical (B, I) presynaptic signal
    transform: Callable[[jax.Array], jax.Array]  # weight leaf -> what the node reads
    elementwise: bool
    fixed: _FixedConn | None = None
    # A fixed selection in front of the weight (``spk[:, :n_exc]``): the op reads the full
    # signal ``z_id`` and ``select`` maps it to what the weight is applied to.
    select: Callable[[jax.Array], jax.Array] | None = None
    target: str = ""
    source: str = ""
    signal: str = ""
    delay: int = 0


@dataclasses.dataclass
class _Pop:
    name: str
    traced: list[_Leaf]
    aux: list[_Leaf]
    size: int
    ops: list[str] = dataclasses.field(default_factory=list)
    ext: list[int] = dataclasses.field(default_factory=list)
    signals: dict[str, int] = dataclasses.field(default_factory=dict)
    spike: Callable[[Mapping[str, jax.Array]], jax.Array] | None = None


class Analysis:
    """The module's step traced at one batch size, with its contract read off."""

    def __init__(self, net: AdaptedNetwork, batch: int) -> None:
        bs = brainstate()
        self.batch = batch
        self.n_in = net.n_in
        x = jnp.zeros((batch, net.n_in), jnp.float32)
        i0, t0 = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)

        import brainunit as u

        def step(x: Any, i: Any, t: Any) -> Any:
            with bs.environ.context(**{**net.environment, "i": i, "t": t * u.ms}):
                return net.call(net.module, x)

        # Traced on its own, with concrete values, even when first needed inside a jit
        # (another batch size), and in the environment captured when the module was attached.
        with jax.ensure_compile_time_eval(), BatchedStates(net.batched_states, batch):
            sf = bs.transform.StatefulFunction(step, return_only_write=False)
            sf.make_jaxpr(x, i0, t0)
            states = list(sf.get_states(x, i0, t0))
            closed = sf.get_jaxpr(x, i0, t0)
            values = [s.value for s in states]
            with bs.environ.context(**net.environment):
                spike_fns = _spikes.spike_functions(net.module)
        nodes, inputs, outputs, consts, avals = flatten(closed, opaque=_sparse.opaque_call)
        g = self.graph = Graph(nodes, inputs, outputs, consts, avals)
        self.x_id, self.i_id, self.t_id = (int(a) for a in inputs[:3])  # type: ignore[arg-type]
        leaves: list[_Leaf] = []
        cursor = 3
        for s, v in zip(states, values, strict=True):
            if id(s) not in net.paths:
                raise ValueError(
                    f"the step uses a {type(s).__name__} that belongs to no submodule of the "
                    "module; attach every state to the module before adapting it."
                )
            keyed = jax.tree_util.tree_flatten_with_path(v, is_leaf=is_quantity)[0]
            for path, leaf in keyed:
                leaves.append(
                    _Leaf(
                        s,
                        net.paths[id(s)],
                        jax.tree_util.keystr(path),
                        state_kind(s),
                        unit_of(leaf),
                        int(cast(int, inputs[cursor])),  # an input is a variable, not a Lit
                        -1,
                    )
                )
                cursor += 1
        n_y = len(outputs) - len(leaves)
        if n_y != 1 or not isinstance(outputs[0], int):
            raise ValueError(
                "the module's step must return one array, the readout's output (for example a "
                f"LeakyRateReadout's value); it returned {n_y} arrays."
            )
        self.y_id = outputs[0]
        for leaf, out in zip(leaves, outputs[n_y:], strict=True):
            leaf.out_id = out
        self.leaves = leaves
        self.params = {lf.name: lf for lf in leaves if lf.kind == "param"}
        self.dynamic = [lf for lf in leaves if lf.kind != "param"]
        for lf in self.params.values():
            if lf.out_id != lf.in_id:
                raise ValueError(
                    f"weight `{lf.name}` is written by the module's step; traxon trains "
                    "weights that the step only reads."
                )
        roots = [self.x_id, self.i_id, self.t_id] + [lf.in_id for lf in self.dynamic]
        self.data = g.descendants(roots)
        self.ops = self._weight_ops()
        self.pops, self.globals = self._populations(net)
        self._sources()
        self._externals()
        self._spikes(spike_fns)

    # ------------------------------------------------------------------------------
    def _weight_ops(self) -> dict[str, _Op]:
        g = self.graph
        by_id = {lf.in_id: lf for lf in self.params.values()}
        derived = g.descendants(list(by_id)) - self.data
        ops: dict[str, _Op] = {}
        users: dict[str, str] = {}
        for node in g.nodes:
            ins = node.input_ids()
            pin = [i for i in ins if i in derived]
            din = [i for i in ins if i in self.data]
            if not pin or not din:
                continue
            leaves = sorted(g.ancestors(pin) & set(by_id))
            names = [by_id[i].name for i in leaves]
            if len(leaves) != 1:
                raise ValueError(
                    f"one operation ({node.name}) combines several weights {names}; traxon "
                    "traces weights applied one at a time, with any algorithm: apply each "
                    "weight by itself."
                )
            name = names[0]
            if name in users:
                raise ValueError(
                    f"weight `{name}` is used by several operations ({users[name]} and "
                    f"{node.name}); traxon traces a weight applied once per step."
                )
            users[name] = node.name
            ops[name] = self._weight_op(node, name, leaves[0], pin[0], din)
        return ops

    def _weight_op(self, node: Node, name: str, leaf: int, pin: int, din: list[int]) -> _Op:
        g, B = self.graph, self.batch
        kind = {"dot_general": "dense", "mul": "elementwise", "add": "bias"}.get(node.name)
        if _sparse.is_sparse(node):
            kind = "fixed"
        elif kind is None and _sparse.looks_sparse(node):
            raise _sparse.unknown_kernel_error(node, name, self.params[name].path.rsplit(".", 1)[0])
        if kind is None:
            raise ValueError(
                f"weight `{name}` enters the step through `{node.name}`, which traxon cannot "
                "trace (it traces dense matmuls, element-wise products, bias additions and "
                "brainevent's fixed connectivity), with any algorithm: apply the weight "
                "with a matmul, a product or a sum."
            )
        raw = node.outs[0]
        if kind == "bias":
            # The bias's own contribution is the weight-only operand of the addition (the
            # other operand may be another weight's output, as in ``x @ W + b``).
            if len(din) != 1 or g.shape(din[0]) != g.shape(raw):
                raise ValueError(f"weight `{name}` is added in an unsupported way.")
            if len(g.shape(pin)) != 2 or g.shape(pin)[1] != g.shape(raw)[-1]:
                raise ValueError(f"bias `{name}` is not one value per neuron.")
            raw = pin  # (1, N) or (B, N): broadcast to (B, N) where it is read
        u_id, layout = (raw, lambda u: u) if kind == "bias" else _to_canonical(g, raw, B)
        if u_id is None:
            raise ValueError(
                f"the output of weight `{name}` ({node.name}, shape {g.shape(raw)}) has no "
                f"(batch, neurons) layout: it is not aligned to postsynaptic neurons, which "
                "every algorithm of traxon needs. Apply it with a matmul, a product or a bias."
            )
        chain = g.ancestors([pin], stop={leaf}) - {leaf}
        chain_nodes = {g.producer[i].index for i in chain if i in g.producer}
        if kind == "bias":  # a broadcast of one value per neuron, perhaps scaled
            elementwise = (
                all(g.nodes[k].name in _ELEMENTWISE | {"broadcast_in_dim"} for k in chain_nodes)
                and g.shape(leaf)[-1:] == g.shape(pin)[-1:]
            )
        else:
            elementwise = all(g.nodes[k].name in _ELEMENTWISE for k in chain_nodes) and (
                g.shape(pin) == g.shape(leaf)
            )

        def transform(W: jax.Array, _g: Graph = g, _leaf: int = leaf, _pin: int = pin) -> Any:
            (out,), _ = _g.evaluate({_leaf: W}, [_pin])
            return out

        z_id = None
        fixed = None
        data_in = din[0]
        if kind != "bias":
            z_id = _from_canonical(g, data_in, B)
            if z_id is None:
                raise ValueError(
                    f"the presynaptic signal of weight `{name}` has no (batch, neurons) layout "
                    f"(shape {g.shape(data_in)}); traxon cannot trace it."
                )
            if kind == "dense":
                (lc, rc), (lb, rb) = node.params["dimension_numbers"]
                data_first = node.ins[0] == data_in
                ok = (
                    not lb
                    and not rb
                    and (
                        (data_first and tuple(lc) == (1,) and tuple(rc) == (0,))
                        or (not data_first and tuple(lc) == (0,) and tuple(rc) == (1,))
                    )
                )
                if not ok or g.shape(z_id) != g.shape(data_in):
                    kind = "dense_other"
            elif kind == "fixed":
                module = self.params[name].path.rsplit(".", 1)[0]
                fixed = _sparse.read(g, node, pin, data_in, name, module)
                _sparse.install(node, fixed)
        return _Op(name, node, leaf, kind, u_id, raw, layout, z_id, transform, elementwise, fixed)

    # ------------------------------------------------------------------------------
    def _populations(self, net: AdaptedNetwork) -> tuple[dict[str, _Pop], list[_Leaf]]:
        g = self.graph
        u_raw = {op.raw_id for op in self.ops.values()}
        leaf_of_in = {lf.in_id: lf for lf in self.dynamic}
        parent = {lf.in_id: lf.in_id for lf in self.dynamic}

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for lf in self.dynamic:
            if not isinstance(lf.out_id, int):
                continue
            for d in g.ancestors([lf.out_id], stop=u_raw) & set(leaf_of_in):
                parent[find(d)] = find(lf.in_id)
        groups: dict[int, list[_Leaf]] = {}
        for lf in self.dynamic:
            groups.setdefault(find(lf.in_id), []).append(lf)
        outs = {lf.out_id: lf for lf in self.dynamic if isinstance(lf.out_id, int)}
        y_src = g.ancestors([self.y_id], stop=set(outs)) & set(outs)
        y_roots = {find(outs[o].in_id) for o in y_src}
        if len(y_roots) != 1:
            raise ValueError(
                "the module's output must be read from the state of one population (for "
                "example a LeakyRateReadout's value); traxon found "
                f"{len(y_roots)} candidate populations."
            )
        readout_root = y_roots.pop()
        pops: dict[str, _Pop] = {}
        glob: list[_Leaf] = []
        self.root_name: dict[int, str] = {}
        for root, members in sorted(groups.items()):
            traced = [lf for lf in members if lf.kind == "hidden"]
            aux = [lf for lf in members if lf.kind != "hidden"]
            if not traced:
                glob.extend(members)
                continue
            sizes = set()
            for lf in traced:
                shape = g.shape(lf.in_id)
                if len(shape) != 2 or shape[0] != self.batch:
                    raise ValueError(
                        f"hidden state `{lf.name}` has shape {shape}; traxon supports hidden "
                        "states of shape (batch, neurons)."
                    )
                sizes.add(shape[1])
            if len(sizes) != 1:
                raise ValueError(
                    f"states {[lf.name for lf in traced]} interact element-wise within the step "
                    f"but have different sizes {sorted(sizes)}; traxon needs one value per neuron."
                )
            seen: dict[str, int] = {}
            for lf in traced + aux:
                base = lf.path.split(".")[-1] + lf.key
                count = seen.get(base, 0)
                seen[base] = count + 1
                lf.short = base if count == 0 else f"{base}#{count}"
            name = READOUT if root == readout_root else net.owner_name(traced)
            base, k = name, 1
            while name in pops:
                name = f"{base}#{k}"
                k += 1
            pops[name] = _Pop(name, traced, aux, sizes.pop())
            self.root_name[root] = name
        self.find = find
        return pops, glob

    def pop_of(self, in_id: int) -> str | None:
        return self.root_name.get(self.find(in_id))

    def _sources(self) -> None:
        g = self.graph
        new_ids, old_ids = {}, {}
        for pop in self.pops.values():
            for lf in pop.traced + pop.aux:
                old_ids[lf.in_id] = pop.name
                if isinstance(lf.out_id, int):
                    new_ids[lf.out_id] = pop.name
        self.new_ids, self.old_ids = new_ids, old_ids
        u_raw = {op.raw_id for op in self.ops.values()}
        for op in self.ops.values():
            consumers = g.descendants([op.raw_id], stop=u_raw - {op.raw_id})
            targets = {new_ids[o] for o in consumers if o in new_ids}
            if len(targets) != 1:
                raise ValueError(
                    f"weight `{op.name}` feeds {sorted(targets) or 'no population'} within the "
                    "step; traxon needs each weight's output to reach exactly one population."
                )
            op.target = targets.pop()
            width = g.shape(op.u_id)[1]
            if width != self.pops[op.target].size:
                raise ValueError(
                    f"the output of weight `{op.name}` has {width} values per sample but feeds "
                    f"population `{op.target}` of {self.pops[op.target].size} neurons: it is not "
                    "aligned to neurons, which every algorithm of traxon needs. Apply it with "
                    "a matmul, a product or a bias, so each neuron gets its own input."
                )
            self.pops[op.target].ops.append(op.name)
            if op.kind == "bias":
                op.source, op.signal, op.delay = ONE, "x", 0
                continue
            assert op.z_id is not None
            srcs = g.ancestors([op.z_id], stop=set(new_ids) | set(old_ids) | {self.x_id})
            from_new = {new_ids[i] for i in srcs if i in new_ids}
            from_old = {old_ids[i] for i in srcs if i in old_ids}
            from_x = self.x_id in srcs
            if len(from_new | from_old) + from_x == 1:
                (src,) = from_new | from_old or {"x"}
                self._full_signal(op, self.n_in if src == "x" else self.pops[src].size)
            if from_x and not from_new and not from_old:
                if op.z_id != self.x_id:
                    raise ValueError(
                        f"weight `{op.name}` reads a transformed input; traxon needs weights "
                        "on the input to read it as it is."
                    )
                op.source, op.signal, op.delay = "x", "x", 0
            elif len(from_new) == 1 and not from_old and not from_x:
                op.source, op.delay, op.signal = from_new.pop(), 0, f"sig:{op.name}"
                self.pops[op.source].signals[op.signal] = op.z_id
            elif len(from_old) == 1 and not from_new and not from_x:
                op.source, op.delay, op.signal = from_old.pop(), 1, f"prev:{op.name}"
            else:
                raise ValueError(
                    f"the presynaptic signal of weight `{op.name}` mixes several sources "
                    f"({sorted(from_new | from_old) + (['input'] if from_x else [])}); traxon "
                    "needs each weight to read one population's spikes or the input."
                )

    def _full_signal(self, op: _Op, width: int) -> None:
        """Move a fixed selection in front of a weight (a slice, an index, a reshape, a
        comparison with a constant) into the weight op: the op then reads the full signal
        of its source, of shape ``(batch, width)``."""
        g = self.graph
        assert op.z_id is not None
        i = op.z_id
        for _ in range(32):
            if g.shape(i) == (self.batch, width):
                break
            node = g.producer.get(i)
            if node is None or node.name not in _SELECT:
                return
            data = [a for a in node.input_ids() if a in self.data]
            if len(data) != 1:
                return  # several signals combined (a concatenation of sources, ...)
            i = data[0]
        else:
            return
        if i == op.z_id:
            return
        target = op.z_id

        def select(z: jax.Array, _g: Graph = g, _full: int = i, _t: int = target) -> Any:
            (out,), _ = _g.evaluate({_full: z.astype(_g.dtype(_full))}, [_t])
            return jnp.asarray(out).astype(z.dtype)

        op.z_id, op.select = i, select

    def _spikes(self, fns: Sequence[_spikes.SpikeFunction]) -> None:
        """Give each population its neurons' own ``get_spike()`` (when one reads only
        its states), so that its ``spike`` signal is what it fires, not a trace it sends."""
        for pop in self.pops.values():
            if pop.name == READOUT:
                continue
            leaves = {(id(lf.state), lf.key): _short(lf) for lf in pop.traced + pop.aux}
            for fn in fns:
                reads = fn.reads()
                if not reads or not reads <= set(leaves):
                    continue
                if self.graph.shape(pop.traced[0].in_id) != (self.batch, pop.size):
                    continue

                def spike(state: Mapping[str, jax.Array], _fn: Any = fn, _l: Any = leaves) -> Any:
                    return _fn({key: state[name] for key, name in _l.items() if key in _fn.reads()})

                pop.spike = spike
                break

    def _externals(self) -> None:
        """Inputs of each transition that are neither its own state nor its weights' output."""
        g = self.graph
        for pop in self.pops.values():
            own = {lf.in_id for lf in pop.traced + pop.aux}
            mine = {self.ops[n].raw_id for n in pop.ops}
            outs = [lf.out_id for lf in pop.traced + pop.aux if isinstance(lf.out_id, int)]
            depends = g.descendants(own | mine)
            cone = g.ancestors(outs, stop=own | mine)
            ext: set[int] = set()
            for i in cone:
                node = g.producer.get(i)
                if node is None or i not in depends:
                    continue
                for j in node.input_ids():
                    if j not in depends and j in self.data:
                        ext.add(j)
            pop.ext = sorted(ext)


def _to_canonical(g: Graph, raw: int, batch: int) -> tuple[int | None, Callable[[Any], Any]]:
    """The first ``(batch, N)`` layout of ``raw`` downstream, and the map back to ``raw``."""
    shape = g.shape(raw)
    if len(shape) == 2 and shape[0] == batch:
        return raw, lambda u: u
    frontier: list[tuple[int, list[Node]]] = [(raw, [])]
    seen = {raw}
    while frontier:
        i, path = frontier.pop(0)
        for node in g.users.get(i, ()):
            if node.name not in _LAYOUT and not (
                node.name in ("mul", "div") and any(isinstance(a, Lit) for a in node.ins)
            ):
                continue
            o = node.outs[0]
            if o in seen:
                continue
            seen.add(o)
            new_path = [*path, node]
            s = g.shape(o)
            if len(s) == 2 and s[0] == batch:
                return o, _inverse(g, new_path)
            frontier.append((o, new_path))
    return None, lambda u: u


def _inverse(g: Graph, path: list[Node]) -> Callable[[Any], Any]:
    steps = []
    for node in reversed(path):
        src = next(a for a in node.ins if isinstance(a, int))
        shape, dtype = g.shape(src), g.dtype(src)
        if node.name == "transpose":
            perm = node.params["permutation"]
            steps.append(("transpose", tuple(int(p) for p in np.argsort(perm))))
        elif node.name == "reshape":
            steps.append(("reshape", shape))
        elif node.name in ("mul", "div"):
            lit = next(a for a in node.ins if isinstance(a, Lit)).value
            steps.append(("scale", 1.0 / lit if node.name == "mul" else lit))
        steps.append(("cast", dtype))

    def back(u: Any) -> Any:
        for op, arg in steps:
            if op == "transpose":
                u = jnp.transpose(u, arg)
            elif op == "reshape":
                u = jnp.reshape(u, arg)
            elif op == "scale":
                u = u * arg
            else:
                u = u.astype(arg)
        return u

    return back


def _from_canonical(g: Graph, data_in: int, batch: int) -> int | None:
    """The last ``(batch, I)`` layout of a node's data operand upstream (through layouts)."""
    i = data_in
    for _ in range(16):
        s = g.shape(i)
        if len(s) == 2 and s[0] == batch:
            return i
        node = g.producer.get(i)
        if node is None or node.name not in _LAYOUT:
            return None
        i = next(a for a in node.ins if isinstance(a, int))
    return None


# --------------------------------------------------------------------------------------
# The contract.


class _AdaptedNeuron(Neuron):
    """Stands in for the neuron model of an adapted population (decays measured)."""

    pop: str = static(default="")
    net: Any = static(default=None)
    is_spiking: bool = static(default=True)

    @property
    def spiking(self) -> bool:
        return self.is_spiking

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.net.populations[self.pop].traced

    def decays(self, dt: float) -> dict[str, float]:
        return self.net.measured_decays(self.pop)


@dataclasses.dataclass(frozen=True)
class AdaptedPopulation(PopulationPlan):
    """An adapted population: its transition evaluates the module's own equations."""

    net: Any = None
    names: tuple[str, ...] = ()
    aux_list: tuple[str, ...] = ()
    prechecked: bool = True  # element-wise coupling was checked when the module was adapted

    @property
    def traced(self) -> tuple[str, ...]:
        return self.names

    @property
    def aux(self) -> tuple[str, ...]:
        return self.aux_list

    def init(self, batch: int, dtype: Any) -> dict[str, jax.Array]:
        return self.net.initial_population(self.name, batch, dtype)

    def transition(
        self, state: Mapping[str, jax.Array], u: Mapping[str, jax.Array], dt: float
    ) -> dict[str, jax.Array]:
        return self.net.transition(self.name, state, u)

    def signals(self, state: Mapping[str, Any]) -> dict[str, jax.Array]:
        return self.net.population_signals(self.name, state)


class AdaptedNetwork(Network):
    """A brainstate module seen through the model contract (build one with :func:`adapt`).

    ``params`` are the mantissas of the module's weights, keyed by their paths (for example
    ``"inp.comm.weight['weight']"``); the network state holds every population's states
    plus the environment's ``i``/``t`` and brainstate's random state.
    """

    def __init__(
        self,
        module: Any,
        input_size: int | None = None,
        call: Callable[[Any, Any], Any] | None = None,
        input_unit: Any = None,
        draw_initial_state: bool = True,
    ) -> None:
        bs = brainstate()
        import brainunit as u

        if not isinstance(module, bs.nn.Module):
            raise TypeError(
                f"`module` must be a brainstate.nn.Module; got {type(module).__name__}."
            )
        if input_unit is not None and not isinstance(input_unit, u.Unit):
            raise TypeError(
                f"`input_unit` must be a brainunit unit (e.g. u.nA); got {input_unit!r}."
            )
        if not isinstance(draw_initial_state, bool):
            raise TypeError(
                f"`draw_initial_state` must be True or False; got {draw_initial_state!r}."
            )
        self.input_unit = input_unit
        if call is None:
            call = (
                (lambda m, x: m.update(x * input_unit))
                if input_unit is not None
                else (lambda m, x: m.update(x))
            )
        _prepare.ensure_batched_states(module)
        if input_size is None:
            input_size = _prepare.infer_input_size(module, call, batch_of(module.states()))
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
            raise TypeError(f"`input_size` must be an integer; got {input_size!r}.")
        if input_size < 1:
            raise ValueError(f"`input_size` must be positive; got {input_size}.")
        self.module = module
        _sparse.ensure_cpu_backend()  # brainevent's pure-JAX CPU kernels when numba is absent
        self.call = call
        self.n_in = int(input_size)
        try:
            dt = bs.environ.get_dt()
        except KeyError as err:
            raise ValueError(
                "brainstate.environ has no `dt`: call brainstate.environ.set(dt=...) before "
                "adapting the module."
            ) from err
        self.dt = float(dt / u.ms) if isinstance(dt, u.Quantity) else float(dt)
        # The environment when attached (dt may be set only in an environ.context).
        self.environment = {
            k: v for k, v in bs.environ.all().items() if k not in ("i", "t", "platform")
        }
        self.inputs = {"x": self.n_in}
        self.readout = None
        self.input_traces: dict[str, tuple] = {"x": ()}
        states = module.states()
        if not len(states):
            raise ValueError(
                "the module has no states: call brainstate.nn.init_all_states(module, "
                "batch_size) before adapting it."
            )
        self.paths, self._slots = shortest_paths(module)
        self.attached = {id(s): s for s in states.values()}
        self.attach_batch = batch_of(states)
        self.batched_states = [
            s
            for s in states.values()
            if state_kind(s) != "param"
            and leaves(s.value)
            and jnp.ndim(mantissa(leaves(s.value)[0])) >= 1
            and jnp.shape(mantissa(leaves(s.value)[0]))[0] == self.attach_batch
        ]
        self.start = initial_values(module, states, self.attach_batch, self._slots)
        self._resets: dict[int, DrawnReset] = {}
        #: Whether :meth:`init_state` given a key draws the module's random initial values
        #: anew (its ``reset_state`` reads brainstate's random state) -- the learner then
        #: passes one key per sequence.
        self.draws_initial_state = draw_initial_state and self._reset(self.attach_batch).draws
        self._analyses: dict[int, Analysis] = {}
        self._decays: dict[str, dict[str, float]] = {}
        a = self.analysis(self.attach_batch)
        self._build_from(a)
        self.written: dict[str, Any] = {}

    def as_inputs(self, x: Any, batch: int | None = None, leading: int = 0) -> dict[str, jax.Array]:
        """As :meth:`Network.as_inputs`; a brainunit Quantity is read in ``input_unit``."""
        if isinstance(x, Mapping):
            x = {k: self._in_unit(v) for k, v in x.items()}
        else:
            x = self._in_unit(x)
        return super().as_inputs(x, batch, leading)

    def _in_unit(self, x: Any) -> Any:
        if not is_quantity(x):
            return x
        if self.input_unit is None:
            import brainunit as u

            raise ValueError(
                f"the input is a Quantity in {u.get_unit(x)}, but the module was attached "
                "without `input_unit`: attach it with input_unit=<the unit its step takes "
                "its input in> (e.g. online_learner(module, ..., input_unit=u.nA)), or pass "
                "plain arrays."
            )
        return x.to_decimal(self.input_unit)

    def owner_name(self, leaves: Sequence[_Leaf]) -> str:
        """A population's name: the common module path of its states, else the path of
        its neuron (the module with ``get_spike``, e.g. ``neu`` for a LIF whose synapse
        state lives in ``inp.syn``), else of its first state's module."""
        parts = [lf.path.split(".")[:-1] for lf in leaves]
        common: list[str] = []
        for items in zip(*parts, strict=False):
            if len(set(items)) != 1:
                break
            common.append(items[0])
        if common:
            return ".".join(common)
        for lf in leaves:
            slots = self._slots.get(id(lf.state))
            if slots and hasattr(slots[0][0], "get_spike"):  # the module holding it
                return lf.path.rsplit(".", 1)[0]
        return leaves[0].path.rsplit(".", 1)[0]

    def analysis(self, batch: int) -> Analysis:
        """The step traced at ``batch`` (cached); its structure must not depend on it."""
        if batch not in self._analyses:
            a = Analysis(self, int(batch))
            if self._analyses:
                ref = next(iter(self._analyses.values()))
                if sorted(a.pops) != sorted(ref.pops) or sorted(a.ops) != sorted(ref.ops):
                    raise ValueError(
                        f"the module's step has a different structure at batch size {batch}; "
                        "adapt it at the batch size you train with."
                    )
            self._analyses[int(batch)] = a
        return self._analyses[int(batch)]

    def _build_from(self, a: Analysis) -> None:
        self.populations = {}
        for name, pop in a.pops.items():
            names = tuple(_short(lf) for lf in pop.traced)
            aux = tuple(_short(lf) for lf in pop.aux)
            _unique(names + aux, name)
            spiking = name != READOUT
            neuron = _AdaptedNeuron(pop=name, net=self, is_spiking=spiking)
            self.populations[name] = AdaptedPopulation(
                name,
                neuron,
                pop.size,
                channels=(),
                pre_traces=(),
                net=self,
                names=names,
                aux_list=aux,
            )
        self.projections = tuple(
            ProjectionPlan(
                name=op.name,
                source=op.source,
                signal=op.signal,
                target=op.target,
                channel=f"w:{op.name}",
                op=AdaptedOp(
                    net=self,
                    name=op.name,
                    kind=op.kind,
                    param_traces=(op.elementwise and op.kind in ("dense", "elementwise", "bias"))
                    or (
                        op.kind == "fixed"
                        and op.fixed is not None
                        and a.graph.shape(op.param_id) != ()
                    ),
                ),
                delay=op.delay,
                n_in=1 if op.source == ONE else a.graph.shape(op.z_id)[1],  # type: ignore[arg-type]
                n_out=a.pops[op.target].size,
                trainable=True,
                from_input=op.source in ("x", ONE),
            )
            for op in a.ops.values()
        )
        self.weight_shapes = {n: a.graph.shape(lf.in_id) for n, lf in a.params.items()}
        unused = sorted(set(a.params) - set(a.ops))
        if unused:
            raise ValueError(
                f"weights {unused} are not applied to any signal in the module's step; "
                "traxon cannot train them (remove them or apply them)."
            )
        self.order = tuple(self.populations)
        for pop in a.pops.values():
            if not self._elementwise(a, pop):
                # Refused by the online rules when they are bound (their error says so);
                # BPTT and RTRL differentiate the whole step and train it as it is.
                plan = cast(AdaptedPopulation, self.populations[pop.name])
                self.populations[pop.name] = dataclasses.replace(plan, prechecked=False)
        if READOUT not in self.populations:
            raise ValueError("no readout population was found in the module.")

    # ------------------------------------------------------------------------------
    # Values.

    def init_params(self, key: Any = None, dtype: Any = None) -> dict[str, jax.Array]:
        """The module's current weights (mantissas), keyed by path. ``key`` is unused."""
        a = self.analysis(self.attach_batch)
        out = {}
        for name, lf in a.params.items():
            value = leaves(lf.state.value)
            leaf = dict(zip(leaf_keys(lf.state.value), value, strict=True))[lf.key]
            arr = jnp.asarray(mantissa(leaf))
            arr = jnp.array(arr, dtype=dtype if dtype is not None else arr.dtype)  # not weak
            out[name] = arr
        return out

    def _reset(self, batch: int) -> DrawnReset:
        """The module's ``reset_state`` at ``batch`` as a function of a key (cached)."""
        if batch not in self._resets:
            self._resets[batch] = DrawnReset(
                self.module, self.batched_states, self.environment, self._slots, batch
            )
        return self._resets[batch]

    def initial_population(
        self,
        pop: str,
        batch: int,
        dtype: Any,
        drawn: Mapping[tuple[int, int], jax.Array] | None = None,
    ) -> dict[str, jax.Array]:
        """Population ``pop``'s states at the start of a sequence: the values the module's
        reset draws (``drawn``, one per sample, see :meth:`init_state`), else the first
        sample of its reset when attached, for every sample."""
        a = self.analysis(self.attach_batch)
        p = a.pops[pop]
        out = {}
        for lf in p.traced + p.aux:
            index = leaf_keys(lf.state.value).index(lf.key)
            if drawn is not None and (id(lf.state), index) in drawn:
                arr = drawn[(id(lf.state), index)]
            else:
                v = self.start[id(lf.state)][index]
                arr = jnp.broadcast_to(v[:1], (batch, *v.shape[1:]))
            if jnp.issubdtype(arr.dtype, jnp.floating) and dtype is not None:
                arr = arr.astype(dtype)
            out[_short(lf)] = jnp.asarray(arr)
        return out

    def batched_leaves(self, a: Analysis) -> list[_Leaf]:
        ids = {id(s) for s in self.batched_states}
        return [lf for lf in a.leaves if id(lf.state) in ids]

    def init_state(
        self, batch_size: int, dtype: Any = None, key: jax.Array | None = None
    ) -> dict[str, dict[str, jax.Array]]:
        """The network state at the start of a sequence of ``batch_size`` samples.

        Without ``key`` (or when :attr:`draws_initial_state` is false) every sample starts
        from the first sample of the module's reset when it was attached. With ``key``,
        a module whose ``reset_state`` draws random values (``V_initializer=
        braintools.init.Uniform(...)``) has them drawn anew from ``key``, one draw per
        sample, as its own ``reset_state`` would; brainstate's random state, when the
        step uses it, starts from the key too. The learner passes a new key for every
        sequence, split from its own (reproducible from its ``seed``).
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
        dtype = dtype if dtype is not None else jnp.zeros(()).dtype
        drawn = (
            self._reset(int(batch_size))(key)
            if key is not None and self.draws_initial_state
            else None
        )
        state: dict[str, dict[str, jax.Array]] = {
            k: self.initial_population(k, int(batch_size), dtype, drawn) for k in self.populations
        }
        a = self.analysis(self.attach_batch)
        if a.globals:
            glob = {}
            batched = {id(lf.state) for lf in self.batched_leaves(a)}
            for lf in a.globals:
                index = leaf_keys(lf.state.value).index(lf.key)
                if drawn is not None and (id(lf.state), index) in drawn:
                    v = drawn[(id(lf.state), index)]
                    if id(lf.state) not in batched:
                        v = jnp.broadcast_to(v, (batch_size, *jnp.shape(v)))
                    glob[_short(lf)] = v
                    continue
                v = self.start[id(lf.state)][index]
                if id(lf.state) in batched:
                    v = v[0]
                glob[_short(lf)] = jnp.broadcast_to(v, (batch_size, *jnp.shape(v)))
            state[GLOBAL] = glob
        state[ENV] = {
            "i": jnp.zeros((batch_size,), jnp.int32),
            "t": jnp.zeros((batch_size,), dtype),
        }
        return state

    def batch_size(self, state: Mapping[str, Any]) -> int:
        return int(state[ENV]["i"].shape[0])

    # ------------------------------------------------------------------------------
    # The step.

    def _inputs(
        self, a: Analysis, params: Mapping[str, Any], state: Mapping[str, Any], x: Any
    ) -> dict[int, Any]:
        g = a.graph
        values: dict[int, Any] = {a.x_id: jnp.asarray(x).astype(g.dtype(a.x_id))}
        values[a.i_id] = state[ENV]["i"][0].astype(g.dtype(a.i_id))
        values[a.t_id] = state[ENV]["t"][0].astype(g.dtype(a.t_id))
        for name, lf in a.params.items():
            values[lf.in_id] = params[name].astype(g.dtype(lf.in_id))
        for pop in a.pops.values():
            for lf in pop.traced + pop.aux:
                values[lf.in_id] = state[pop.name][_short(lf)].astype(g.dtype(lf.in_id))
        batched = {id(lf.state) for lf in self.batched_leaves(a)}
        for lf in a.globals:
            v = state[GLOBAL][_short(lf)]
            values[lf.in_id] = (v if id(lf.state) in batched else v[0]).astype(g.dtype(lf.in_id))
        return values

    def forward(
        self,
        params: Mapping[str, jax.Array],
        state: Mapping[str, Any],
        x: Mapping[str, jax.Array],
        perturb: Mapping[str, Mapping[str, jax.Array]] | None = None,
        sever: frozenset[str] = frozenset(),
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        xs = x["x"]
        a = self.analysis(xs.shape[0])
        g = a.graph
        values = self._inputs(a, params, state, xs)
        delta: dict[int, Any] = {}
        for pop_name, sigs in (perturb or {}).items():
            for sig, d in sigs.items():
                if pop_name == READOUT and sig == "spike":
                    delta[a.y_id] = d
                elif sig in a.pops[pop_name].signals:
                    i = a.pops[pop_name].signals[sig]
                    delta[i] = (
                        d.astype(g.dtype(i)) if jnp.issubdtype(g.dtype(i), jnp.floating) else d
                    )
        targets: list[Any] = [a.y_id]
        for pop in a.pops.values():
            targets += [lf.out_id for lf in pop.traced + pop.aux]
        targets += [lf.out_id for lf in a.globals]
        record = {op.u_id for op in a.ops.values()}
        record |= {op.z_id for op in a.ops.values() if op.z_id is not None}
        record |= {i for pop in a.pops.values() for i in pop.ext}
        record |= {i for pop in a.pops.values() for i in pop.signals.values()}
        outs, rec = g.evaluate(values, targets, perturb=delta, record=sorted(record))
        y = outs[0]
        cursor = 1
        new_state: dict[str, Any] = {}
        dtype = state[ENV]["t"].dtype
        for pop in a.pops.values():
            entry = {}
            for lf in pop.traced + pop.aux:
                v = outs[cursor]
                cursor += 1
                entry[_short(lf)] = jnp.asarray(v).astype(state[pop.name][_short(lf)].dtype)
            new_state[pop.name] = entry
        if a.globals:
            glob = {}
            for lf in a.globals:
                v = jnp.asarray(outs[cursor])
                cursor += 1
                old = state[GLOBAL][_short(lf)]
                glob[_short(lf)] = jnp.broadcast_to(v, old.shape).astype(old.dtype)
            new_state[GLOBAL] = glob
        new_state[ENV] = {"i": state[ENV]["i"] + 1, "t": state[ENV]["t"] + self.dt}
        us: dict[str, dict[str, jax.Array]] = {p: {} for p in a.pops}
        zs: dict[str, jax.Array] = {}
        batch = xs.shape[0]
        for op in a.ops.values():
            u = rec[op.u_id].astype(dtype)
            u = jnp.broadcast_to(u, (batch, u.shape[-1]))  # a bias may be (1, N)
            if op.name in sever:
                u = jax.lax.stop_gradient(u)
            us[op.target][f"w:{op.name}"] = u
            zs[op.name] = (
                jnp.ones((batch, 1), dtype) if op.z_id is None else rec[op.z_id].astype(dtype)
            )
        for pop in a.pops.values():
            for i in pop.ext:
                us[pop.name][f"ext:{i}"] = rec[i]
        signals = {
            pop.name: {s: rec[i].astype(dtype) for s, i in pop.signals.items()}
            for pop in a.pops.values()
        }
        signals[READOUT]["spike"] = jnp.asarray(y).astype(dtype)
        for pop in a.pops.values():
            if pop.spike is not None and pop.name != READOUT:
                signals[pop.name]["spike"] = pop.spike(new_state[pop.name]).astype(dtype)
            elif "spike" not in signals[pop.name]:
                full = [s for s, i in pop.signals.items() if g.shape(i) == (batch, pop.size)]
                signals[pop.name]["spike"] = (
                    signals[pop.name][full[0]]
                    if full
                    else self.population_signals(pop.name, new_state[pop.name])["spike"]
                )
        return new_state, {"u": us, "z": zs, "signals": signals, "prev_signals": {}}

    def transition(
        self, pop: str, state: Mapping[str, jax.Array], u: Mapping[str, jax.Array]
    ) -> dict[str, jax.Array]:
        batch = next(iter(state.values())).shape[0]
        a = self.analysis(batch)
        p = a.pops[pop]
        g = a.graph
        values = {lf.in_id: state[_short(lf)].astype(g.dtype(lf.in_id)) for lf in p.traced + p.aux}
        overrides = {}
        for name in p.ops:  # an input not given is zero (the element-wise probe gives none)
            op = a.ops[name]
            ui = u.get(f"w:{name}", jnp.zeros((batch, p.size), g.dtype(op.raw_id)))
            overrides[op.raw_id] = op.to_raw(ui).astype(g.dtype(op.raw_id))
        for i in p.ext:
            overrides[i] = u.get(f"ext:{i}", jnp.zeros((batch, *g.shape(i)[1:]), g.dtype(i)))
        targets = [lf.out_id for lf in p.traced + p.aux]
        try:
            outs, _ = g.evaluate(values, targets, overrides=overrides)
        except KeyError as err:
            raise ValueError(
                f"population `{pop}`'s transition reads values traxon did not identify ({err}); "
                "this module's structure is not supported."
            ) from err
        return {
            _short(lf): jnp.asarray(v).astype(state[_short(lf)].dtype)
            for lf, v in zip(p.traced + p.aux, outs, strict=True)
        }

    def population_signals(self, pop: str, state: Mapping[str, Any]) -> dict[str, jax.Array]:
        """This step's signals of a population as functions of its (new) state.

        ``"spike"`` is the population's full-width signal: one it sends within the step, or
        the one it sends to the next step read off the given state.
        """
        batch = next(iter(state.values())).shape[0]
        a = self.analysis(batch)
        p = a.pops[pop]
        g = a.graph
        dtype = next(iter(state.values())).dtype
        as_new = {
            lf.out_id: state[_short(lf)].astype(g.dtype(lf.in_id))
            for lf in p.traced + p.aux
            if isinstance(lf.out_id, int)
        }
        as_old = {lf.in_id: state[_short(lf)].astype(g.dtype(lf.in_id)) for lf in p.traced + p.aux}
        names = list(p.signals)
        ids = [p.signals[n] for n in names]
        if pop == READOUT:
            names.append("spike")
            ids.append(a.y_id)
        out: dict[str, jax.Array] = {}
        try:
            if ids:
                vals, _ = g.evaluate(as_new, ids)
                out = {n: jnp.asarray(v).astype(dtype) for n, v in zip(names, vals, strict=True)}
            if pop != READOUT:
                full = [n for n in names if g.shape(p.signals[n]) == (batch, p.size)]
                if p.spike is not None:
                    out["spike"] = p.spike(state).astype(dtype)
                elif full:
                    out["spike"] = out[full[0]]
                else:
                    prev = [
                        op.z_id
                        for op in a.ops.values()
                        if op.source == pop
                        and op.delay == 1
                        and op.z_id is not None
                        and g.shape(op.z_id) == (batch, p.size)
                    ]
                    if prev:
                        (v,), _ = g.evaluate(as_old, [prev[0]])
                        out["spike"] = jnp.asarray(v).astype(dtype)
                    else:
                        out["spike"] = jnp.zeros((batch, p.size), dtype)
        except KeyError as err:
            raise ValueError(
                f"a signal of population `{pop}` is not a function of its state alone ({err})."
            ) from err
        return out

    def signals(self, state: Mapping[str, Any]) -> dict[str, dict[str, jax.Array]]:
        return {k: self.population_signals(k, state[k]) for k in self.populations}

    # ------------------------------------------------------------------------------
    def measured_decays(self, pop: str) -> dict[str, float]:
        """Per-step decay of each traced variable, read off the per-neuron Jacobian at rest."""
        if pop not in self._decays:
            plan = self.populations[pop]
            a = self.analysis(1)
            dtype = a.graph.dtype(a.pops[pop].traced[0].in_id)
            state = plan.init(1, dtype)
            u = {f"w:{n}": jnp.zeros((1, plan.size), dtype) for n in a.pops[pop].ops}
            for i in a.pops[pop].ext:
                u[f"ext:{i}"] = jnp.zeros(a.graph.shape(i), a.graph.dtype(i))
            names = plan.traced
            diag = {}
            for k, n in enumerate(names):
                tangent = {m: jnp.zeros_like(v) for m, v in state.items()}
                tangent[n] = jnp.ones_like(state[n])

                def f(st: Any) -> Any:
                    return plan.transition({**state, **st}, u, self.dt)

                _, out = jax.jit(lambda p, t: jax.jvp(f, (p,), (t,)))(
                    {m: state[m] for m in names}, {m: tangent[m] for m in names}
                )
                diag[n] = float(np.clip(np.mean(np.asarray(out[n])), 0.0, 1.0))
                del k
            self._decays[pop] = diag
        return self._decays[pop]

    def _elementwise(self, a: Analysis, pop: _Pop) -> bool:
        """Whether the population's step leaves other neurons alone (a forward-mode probe)."""
        if pop.size < 2:
            return True
        g = a.graph
        own = list(pop.traced)
        values = {
            lf.in_id: jnp.zeros(g.shape(lf.in_id), g.dtype(lf.in_id)) + 0.1
            for lf in pop.traced + pop.aux
        }
        overrides = {
            a.ops[n].raw_id: jnp.zeros(g.shape(a.ops[n].raw_id), g.dtype(a.ops[n].raw_id))
            for n in pop.ops
        }
        for i in pop.ext:
            overrides[i] = jnp.zeros(g.shape(i), g.dtype(i))
        outs_ids = [lf.out_id for lf in own]

        def f(vals: Any) -> Any:
            return g.evaluate({**values, **vals}, outs_ids, overrides=overrides)[0]

        primal = {lf.in_id: values[lf.in_id] for lf in own}
        tangent = {i: jnp.zeros_like(v).at[:, 0].set(1.0) for i, v in primal.items()}
        _, out = jax.jit(lambda p, t: jax.jvp(f, (p,), (t,)))(primal, tangent)
        leak = max(float(jnp.max(jnp.abs(o[:, 1:]))) for o in out)
        return not leak > 0

    # ------------------------------------------------------------------------------
    def write_back(self, params: Mapping[str, jax.Array]) -> None:
        """Write weights into the module's ``ParamState`` objects, units restored."""
        self.check_attached()
        a = self.analysis(self.attach_batch)
        by_state: dict[int, dict[str, Any]] = {}
        for name, lf in a.params.items():
            by_state.setdefault(id(lf.state), {})[lf.key] = params[name]
        for sid, items in by_state.items():
            state = self.attached[sid]
            old_leaves = leaves(state.value)
            new = []
            for key, old in zip(leaf_keys(state.value), old_leaves, strict=True):
                if key in items:
                    value = jnp.asarray(items[key]).astype(jnp.asarray(mantissa(old)).dtype)
                    unit = unit_of(old)
                    new.append(value * unit if unit is not None else value)
                else:
                    new.append(old)
            treedef = jax.tree_util.tree_structure(state.value, is_leaf=is_quantity)
            state.value = jax.tree_util.tree_unflatten(treedef, new)
            self.written[self.paths[sid]] = state.value

    def changed_params(self) -> list[str]:
        """Weights whose module value is not the one :meth:`write_back` last wrote."""
        a = self.analysis(self.attach_batch)
        return [
            name for name, lf in a.params.items() if self.written.get(lf.path) is not lf.state.value
        ]

    def check_attached(self) -> None:
        """Raise if the module's weights were replaced since they were attached."""
        current = {id(s) for s in self.module.states().values()}
        a = self.analysis(self.attach_batch)
        for lf in a.params.values():
            if id(lf.state) not in current:
                raise ValueError(
                    f"weight `{lf.name}` is no longer part of the module (it was replaced or "
                    "re-initialised after attaching); adapt the module again."
                )


def _short(lf: _Leaf) -> str:
    return lf.short or lf.path.split(".")[-1] + lf.key


def _unique(names: Sequence[str], pop: str) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"population `{pop}` has states with equal names {sorted(names)}.")


def adapt(
    module: Any,
    input_size: int | None = None,
    call: Callable[[Any, Any], Any] | None = None,
    input_unit: Any = None,
    draw_initial_state: bool = True,
) -> AdaptedNetwork:
    """Read a brainstate module's step into the model contract (see the module docstring).

    Arguments:
        module: a ``brainstate.nn.Module`` whose ``update(x)`` returns the readout's
            output. Its states are initialised with a batch axis if they are not
            (``brainstate.nn.init_all_states(module, batch_size=1)``); any batch size
            works afterwards.
        input_size: the number of input channels per sample (default: the first input
            size declared by the module's layers with which its step traces).
        call: ``call(module, x)`` when one step is not ``module.update(x)``.
        input_unit: the brainunit unit the module takes its input in (e.g. ``u.nA``): the
            step is ``module.update(x * input_unit)`` and Quantities given to the learner
            are read in this unit. Plain arrays are taken as mantissas in it.
        draw_initial_state: when the module's ``reset_state`` draws random values
            (``V_initializer=braintools.init.Uniform(...)``), draw them anew for every
            sequence from the learner's key, one draw per sample, as brainstate's
            ``reset_state`` does (default); ``False``: every sequence and sample starts
            from the first sample of the draw made when attaching.

    Example:
        >>> import brainstate, brainunit as u, brainpy.state as bps  # doctest: +SKIP
        >>> net = traxon.adapters.adapt(my_module, input_size=40)    # doctest: +SKIP
    """
    return AdaptedNetwork(module, input_size, call, input_unit, draw_initial_state)
