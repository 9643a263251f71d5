"""Reading a module's step: the jaxpr of one ``module.update(x)`` -> weights, populations.

:class:`Analysis` traces one step at one batch size and reads the model contract off it:
the weight uses (:class:`WeightUse`: which equation applies each ``ParamState`` leaf to
which presynaptic signal), the populations (:class:`PopulationInfo`: hidden states that
interact element-wise once every weight's output is held fixed), which population each
weight reads and feeds, and the readout (the population the step's output is read from).
Everything here is about the traced graph; the states it reads are
:class:`StateLeaf` objects, and building the traxon network from an analysis is
:mod:`traxon.adapters._build`'s job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from traxon.adapters import _blocks, _sparse, _spikes
from traxon.adapters._blocks import Block
from traxon.adapters._graph import Graph, Lit, Node, flatten
from traxon.adapters._keys import SignalKey
from traxon.adapters._peers import expand_peer_primitive
from traxon.adapters._states import BatchedStates, Slot
from traxon.adapters._values import (
    brainstate,
    is_quantity,
    is_random_state,
    state_kind,
    unit_of,
)
from traxon.core.network import ONE, READOUT

if TYPE_CHECKING:
    from traxon.adapters.brainstate import AdaptedNetwork

__all__ = ["Analysis", "PopulationInfo", "StateLeaf", "WeightUse", "owner_name", "selected"]

#: Primitives that act element-wise (a transition made of them leaves other neurons alone).
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
#: Primitives that only change the layout of a value (a weight output's or a signal's).
_LAYOUT = {"transpose", "reshape", "convert_element_type", "copy", "copy_p"}
#: Fixed selections of a signal that may stand in front of a weight (part of its op).
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


#: The name of the state that stands for a module's output when it has none of its own
#: (:meth:`Analysis._stateless_values`).
OUTPUT = "output"


def selected(info: WeightUse, z: jax.Array) -> jax.Array:
    """What weight use ``info`` applies its weight to, given its source's full signal ``z``
    (``z`` itself unless a fixed selection stands in front of the weight)."""
    return z if info.select is None else info.select(z)


# --------------------------------------------------------------------------------------
# What one traced step tells us.


@dataclasses.dataclass
class StateLeaf:
    """One leaf of one state's value, as the traced step reads and writes it.

    ``state`` is the brainstate State object, ``path`` its shortest attribute path in the
    module and ``key`` the leaf's path within the state's value (``"['weight']"``, or
    ``""`` for a plain array); ``kind`` is :data:`~traxon.adapters._values.StateKind`,
    ``unit`` the leaf's unit (``None`` when it has none); ``in_id`` and ``out_id`` are the
    ids of its value before and after the step in the step's :class:`Graph` (``out_id`` a
    literal when the step writes a constant). ``short`` is its name within its population.

    ``block`` marks a weight the module does not have: the rows and columns of the leaf's
    value one matmul of a split weight applies (:mod:`~traxon.adapters._blocks`).

    ``previous`` marks a state the module does not have: the value another leaf of its
    population had at the start of the step (the same ``state`` and ``key``; its ``out_id``
    is that leaf's ``in_id``), added when a signal reads the population both before and
    after its update (a threshold crossing, :meth:`Analysis._read_previous`).
    """

    state: Any
    path: str
    key: str
    kind: str
    unit: Any
    in_id: int
    out_id: int | Lit
    short: str = ""  # its name within its population (unique there)
    previous: bool = False
    block: Block | None = None

    @property
    def name(self) -> str:
        """The leaf's full name: its state's path and its key (a weight's name), and the
        rows and columns of the leaf's value it holds when it is a block of it."""
        return self.path + self.key + (self.block.label if self.block is not None else "")

    @property
    def local_name(self) -> str:
        """The leaf's name within its population's state (``short``, once populations are
        found; until then its state's attribute name and key)."""
        return self.short or self.path.split(".")[-1] + self.key


@dataclasses.dataclass
class WeightUse:
    """How the traced step applies one weight: the equation ``node`` that reads it and what
    surrounds that equation.

    ``kind`` is ``"dense"`` (a matmul of ``(batch, I)`` by ``(I, N)``), ``"dense_other"``
    (another contraction), ``"elementwise"``, ``"bias"`` or ``"fixed"`` (sparse
    connectivity, ``fixed``). Ids are those of the step's :class:`Graph`. ``target`` is the
    population it feeds, ``source``/``signal``/``delay`` what it reads (set by
    :meth:`Analysis._sources`).
    """

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
    fixed: _sparse.SparseConn | None = None
    # A fixed selection in front of the weight (``spk[:, :n_exc]``): the op reads the full
    # signal ``z_id`` and ``select`` maps it to what the weight is applied to.
    select: Callable[[jax.Array], jax.Array] | None = None
    target: str = ""
    source: str = ""
    signal: str = ""
    delay: int = 0
    # The equation reads the weight leaf itself (no transform between them).
    identity: bool = False


@dataclasses.dataclass
class PopulationInfo:
    """A population found in the step: the hidden states (``traced``) and other states
    (``aux``) that interact element-wise once every weight's output is held fixed, its
    size, the weights that feed it (``ops``), the ids of its external inputs' values
    (``ext``), the signals it sends within the step (contract name -> id) and, when its
    neurons' ``get_spike()`` reads only its states, that function (``spike``)."""

    name: str
    traced: list[StateLeaf]
    aux: list[StateLeaf]
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
        # t in the default float type: float64 under x64, as brainstate's `i * dt` is.
        i0, t0 = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.result_type(float))

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
        nodes, inputs, outputs, consts, avals = flatten(
            closed, opaque=_sparse.opaque_call, expand=expand_peer_primitive
        )
        self.x_id, self.i_id, self.t_id = (int(a) for a in inputs[:3])  # type: ignore[arg-type]
        leaves: list[StateLeaf] = []
        cursor = 3
        for s, v in zip(states, values, strict=True):
            if id(s) not in net.paths and is_random_state(s):
                # brainstate's global random state (noise, Poisson inputs): carried in the
                # network state like the module's own states.
                net.adopt_random_state(s)
            if id(s) not in net.paths:
                raise ValueError(
                    f"the step uses a {type(s).__name__} that belongs to no submodule of the "
                    "module; attach every state to the module before adapting it."
                )
            keyed = jax.tree_util.tree_flatten_with_path(v, is_leaf=is_quantity)[0]
            for path, leaf in keyed:
                leaves.append(
                    StateLeaf(
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
        params = [lf for lf in leaves if lf.kind == "param"]
        self.dynamic = [lf for lf in leaves if lf.kind != "param"]
        for lf in params:
            if lf.out_id != lf.in_id:
                raise ValueError(
                    f"weight `{lf.name}` is written by the module's step; traxon trains "
                    "weights that the step only reads."
                )
        # A weight on a concatenation of signals, or feeding several gates, becomes one
        # weight per block (brainstate.nn's recurrent cells).
        nodes, blocks = _blocks.split(nodes, avals, [lf.in_id for lf in params])
        self.params = {}
        for lf in params:
            for i, block in blocks.get(lf.in_id, [(lf.in_id, None)]):
                part = (
                    lf if block is None else dataclasses.replace(lf, in_id=i, out_id=i, block=block)
                )
                self.params[part.name] = part
        g = self.graph = Graph(nodes, inputs, outputs, consts, avals)
        roots = [self.x_id, self.i_id, self.t_id] + [lf.in_id for lf in self.dynamic]
        self.data = g.descendants(roots)
        self.ops = self._weight_ops(net.sparse_connectivity())
        self._stateless_values(net)
        self.pops, self.globals = self._populations(net)
        self._sources()
        self._externals()
        self._spikes(spike_fns)

    # ------------------------------------------------------------------------------
    def _weight_ops(self, known: Mapping[str, _sparse.SparseConn]) -> dict[str, WeightUse]:
        """Find the equation that applies each weight to data (once, by itself); ``known``:
        the sparse weights' connectivity read at another batch size (reused when the same)."""
        g = self.graph
        by_id = {lf.in_id: lf for lf in self.params.values()}
        derived = g.descendants(list(by_id)) - self.data
        ops: dict[str, WeightUse] = {}
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
            ops[name] = self._weight_op(node, name, leaves[0], pin[0], din, known.get(name))
        return ops

    def _weight_op(
        self,
        node: Node,
        name: str,
        leaf: int,
        pin: int,
        din: list[int],
        known: _sparse.SparseConn | None = None,
    ) -> WeightUse:
        """Read how equation ``node`` applies weight ``name`` (graph input ``leaf``, reaching
        ``node`` as ``pin``) to its data operands ``din``: its kind, its output in the
        canonical ``(batch, N)`` layout, its presynaptic signal."""
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
                fixed = _sparse.read(g, node, pin, data_in, name, module, known)
                _sparse.install(node, fixed)
        return WeightUse(
            name,
            node,
            leaf,
            kind,
            u_id,
            raw,
            layout,
            z_id,
            transform,
            elementwise,
            fixed,
            identity=pin == leaf,
        )

    def _stateless_values(self, net: AdaptedNetwork) -> None:
        """Give a state to the values of this step that are weights' outputs with no state
        in between, so that each becomes a population with no memory (decay 0):

        * the module's output when it reads a weight's output (a ``Linear`` readout of the
          last layer's hidden state or spikes): the readout population, whose state is the
          output (traxon's instantaneous ``Readout``);
        * a weight's presynaptic signal computed from other weights' outputs alone (an ANN
          encoder's ``relu(Linear(x))`` in front of a spiking layer's weight): a population
          whose state is that signal, sent within the step, named after the module of the
          weight it reads (``enc.layers.0``, state ``output``). Not when the value is also
          read by a state's update without a weight (braintrace's MinimalRNNCell reads
          ``phi(x)`` in its update too): ``_signal_reads`` refuses that.

        A signal that mixes a weight's output with a state (GRUCell's ``r * h``) gets none
        (``_signal_reads`` refuses it)."""
        g = self.graph
        outs = {lf.out_id for lf in self.dynamic if isinstance(lf.out_id, int)}
        ins = {lf.in_id for lf in self.dynamic}
        u_raw = {op.raw_id for op in self.ops.values()}
        values: dict[int, str] = {}
        if self.y_id not in outs and g.ancestors([self.y_id], stop=outs | u_raw) & u_raw:
            values[self.y_id] = OUTPUT
        for op in self.ops.values():
            if op.z_id is None or op.z_id in values:
                continue
            reads = g.ancestors([op.z_id], stop=outs | ins | u_raw | {self.x_id})
            # read through weights only (else a population reads another's state unweighted)
            only = not g.descendants([op.z_id], stop=u_raw) & outs
            if only and reads & u_raw and not reads & (outs | ins | {self.x_id}):
                read = sorted(
                    self.params[o.name].path for o in self.ops.values() if o.raw_id in reads
                )
                path = base = read[0].rsplit(".", 1)[0] + "." + OUTPUT
                while path in values.values():  # two values read from one module's weights
                    path = f"{base}#{len(values)}"
                values[op.z_id] = path
        for out, path in values.items():
            state = net.value_state(path, g.shape(out)[1:], g.dtype(out))
            i = max(g.avals) + 1  # its value at the step's start: read by nothing
            g.avals[i] = g.avals[out]
            self.dynamic.append(StateLeaf(state, path, "", "hidden", None, i, out))

    # ------------------------------------------------------------------------------
    def _populations(
        self, net: AdaptedNetwork
    ) -> tuple[dict[str, PopulationInfo], list[StateLeaf]]:
        """Group the dynamic states into populations (union-find over the states each
        new state reads, weights' outputs held fixed); the rest are global states."""
        g = self.graph
        u_raw = {op.raw_id for op in self.ops.values()}
        # A random state belongs to no population: its draws are inputs of the transitions
        # that read them (`_externals`), like a weight's output; it is a global state.
        random = [lf for lf in self.dynamic if is_random_state(lf.state)]
        grouped = [lf for lf in self.dynamic if lf not in random]
        leaf_of_in = {lf.in_id: lf for lf in grouped}
        parent = {lf.in_id: lf.in_id for lf in grouped}

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for lf in grouped:
            if not isinstance(lf.out_id, int):
                continue
            for d in g.ancestors([lf.out_id], stop=u_raw) & set(leaf_of_in):
                parent[find(d)] = find(lf.in_id)
        groups: dict[int, list[StateLeaf]] = {}
        for lf in grouped:
            groups.setdefault(find(lf.in_id), []).append(lf)
        outs = {lf.out_id: lf for lf in grouped if isinstance(lf.out_id, int)}
        y_src = g.ancestors([self.y_id], stop=set(outs)) & set(outs)
        y_roots = {find(outs[o].in_id) for o in y_src}
        if len(y_roots) != 1:
            raise ValueError(
                "the module's output must be read from the state of one population (for "
                "example a LeakyRateReadout's value); traxon found "
                f"{len(y_roots)} candidate populations."
            )
        readout_root = y_roots.pop()
        pops: dict[str, PopulationInfo] = {}
        glob: list[StateLeaf] = list(random)
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
            name = READOUT if root == readout_root else owner_name(traced, net.slots)
            base, k = name, 1
            while name in pops:
                name = f"{base}#{k}"
                k += 1
            pops[name] = PopulationInfo(name, traced, aux, sizes.pop())
            self.root_name[root] = name
        self.find = find
        return pops, glob

    def pop_of(self, in_id: int) -> str | None:
        """The population a state value (graph input ``in_id``) belongs to, if any."""
        return self.root_name.get(self.find(in_id))

    def _sources(self) -> None:
        """Find the population each weight feeds and the signal it reads: the input, a
        population's signal sent within the step, or one read at the step's start."""
        g = self.graph
        new_ids, old_ids = {}, {}
        for pop in self.pops.values():
            for lf in pop.traced + pop.aux:
                old_ids[lf.in_id] = pop.name
                if isinstance(lf.out_id, int):
                    new_ids[lf.out_id] = pop.name
        self.new_ids, self.old_ids = new_ids, old_ids
        u_raw = {op.raw_id for op in self.ops.values()}
        reads = self._signal_reads(set(new_ids) | set(old_ids))
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
            assert op.z_id is not None  # every weight but a bias reads a signal
            srcs = reads[op.name]
            drawn = sorted(lf.name for lf in self.globals if lf.in_id in srcs)
            if drawn and self.x_id not in srcs:  # with the input: a transformed input, below
                raise ValueError(
                    f"the presynaptic signal of weight `{op.name}` reads {drawn}, a state of no "
                    "population (a random draw of this step, as brainstate.nn.Dropout's mask "
                    "in front of the weight); traxon needs each weight to read one "
                    "population's state or the input, with any algorithm. Leave the dropout "
                    "out of the module, or apply it to the data before the learner."
                )
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
                        "on the input to read it as it is. Transform the data before giving "
                        "it to the learner (for example, encode rates as spikes with "
                        "PoissonEncoder outside the module)."
                    )
                op.source, op.signal, op.delay = "x", "x", 0
            elif len(from_new) == 1 and not from_old and not from_x:
                op.source, op.delay, op.signal = from_new.pop(), 0, SignalKey(op.name, 0).label
                self.pops[op.source].signals[op.signal] = op.z_id
            elif len(from_old) == 1 and not from_new and not from_x:
                op.source, op.delay, op.signal = from_old.pop(), 1, SignalKey(op.name, 1).label
            elif len(from_new) == 1 and from_new == from_old and not from_x:
                # The population before and after its update (HH's rising edge,
                # `spike(V) * (1 - spike(V_last))`): a signal of its new state once the
                # state also holds the values it had at the step's start.
                op.source, op.delay, op.signal = from_new.pop(), 0, SignalKey(op.name, 0).label
                self._read_previous(self.pops[op.source], srcs)
                self.pops[op.source].signals[op.signal] = op.z_id
            else:
                raise ValueError(
                    f"the presynaptic signal of weight `{op.name}` mixes several sources "
                    f"({sorted(from_new | from_old) + (['input'] if from_x else [])}); traxon "
                    "needs each weight to read one population's spikes or the input."
                )

    def _signal_reads(self, states: set[int]) -> dict[str, set[int]]:
        """What each weight's presynaptic signal reads, up to the input and the values of
        ``states`` (by weight name; weights without a signal, biases, are left out).

        Raises for a weight whose signal reads another weight's output of the same step
        without a state in between (GRUCell's reset gate, `Wh(concatenate([x, r * h]))`),
        naming the weights: checked before anything else about the weights, whose other
        errors would not say why (the gate's weight "feeds no population")."""
        g = self.graph
        reads: dict[str, set[int]] = {}
        for op in self.ops.values():
            if op.z_id is None:
                continue
            srcs = reads[op.name] = g.ancestors([op.z_id], stop=states | {self.x_id})
            # the module's weights (not their blocks) whose output the signal reads
            gates = sorted(
                {
                    self.params[o.name].path + self.params[o.name].key
                    for o in self.ops.values()
                    if o.raw_id in srcs
                }
            )
            if gates:
                raise ValueError(
                    f"the presynaptic signal of weight `{op.name}` depends on the output of "
                    f"{gates} within the same step (a gate applied before the weight, as "
                    "GRUCell's and MGUCell's `Wh(concatenate([x, r * h]))`); traxon needs each "
                    "weight to read one population's state or the input, with any algorithm. "
                    "Apply the gate after the weight (traxon.core.GRU: `r * (h @ W_hh)`), or "
                    "use LSTMCell or ValinaRNNCell."
                )
        return reads

    def _read_previous(self, pop: PopulationInfo, reads: set[int]) -> None:
        """Add to ``pop`` a ``previous`` leaf for each of its states whose value at the
        step's start is in ``reads`` (once per state): its new value is that start value, so
        a signal reading the population before and after its update reads its new state."""
        g = self.graph
        have = {lf.out_id for lf in pop.traced + pop.aux if lf.previous}
        for lf in [lf for lf in pop.traced + pop.aux if not lf.previous]:
            if lf.in_id not in reads or lf.in_id in have:
                continue
            i = max(g.avals) + 1
            g.avals[i] = g.avals[lf.in_id]
            prev = dataclasses.replace(
                lf, in_id=i, out_id=lf.in_id, short=f"{lf.local_name}@prev", previous=True
            )
            (pop.traced if lf in pop.traced else pop.aux).append(prev)
            self.old_ids[i] = pop.name

    def _full_signal(self, op: WeightUse, width: int) -> None:
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
            leaves = {
                (id(lf.state), lf.key): lf.local_name
                for lf in pop.traced + pop.aux
                if not lf.previous
            }
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
    """The map from the end of a chain of layout equations back to its start."""
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


def owner_name(leaves: Sequence[StateLeaf], slots: Mapping[int, Sequence[Slot]]) -> str:
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
        held = slots.get(id(lf.state))
        if held and hasattr(held[0][0], "get_spike"):  # the module holding it
            return lf.path.rsplit(".", 1)[0]
    return leaves[0].path.rsplit(".", 1)[0]
