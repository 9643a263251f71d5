"""Numerical helpers shared by the tests."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np


def tree_allclose(a, b, rtol: float = 1e-6, atol: float = 0.0) -> bool:
    """True when two pytrees have the same structure and all leaves are close."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    pairs = zip(la, lb, strict=True)
    return all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol) for x, y in pairs)


def load_script(path: str) -> ModuleType:
    """The script at ``path`` (relative to the repository root) as a module (its ``main``
    does not run), so that a test uses the script's own code rather than a copy of it."""
    file = Path(__file__).resolve().parents[1] / path
    spec = importlib.util.spec_from_file_location(f"_script_{file.stem}", file)
    assert spec is not None and spec.loader is not None, file
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module (:func:`load_script`)."""
    return load_script(f"examples/{name}.py")


def rel_error(a, b) -> float:
    """Relative error ``|a - b| / |b|`` of two arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def cosine(a, b) -> float:
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """float64 enabled inside the block, the previous setting restored after it."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def run_checked(
    args: list[Any], timeout: float = 300, **kwargs: Any
) -> subprocess.CompletedProcess:
    """Run ``python *args`` (``cwd``/``env`` in ``kwargs``); fail with the ends of its output
    unless it exits with 0."""
    cmd = [sys.executable, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, (
        f"{' '.join(cmd[1:3])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


def small_brain() -> tuple[Any, Any]:
    """The small connectome learner of the across-device tests (64 neurons, 600
    connections, 4 regions, es_d_rtrl with Adam) and its batch of 4 ten-step sequences."""
    import optax

    import traxon
    from traxon.connectome import connectome_network, synthetic_connectome
    from traxon.tasks import RegionRates, region_rate_loss

    c = synthetic_connectome(n_neurons=64, n_connections=600, n_regions=4, seed=0)
    net = connectome_network(c, n_inputs=8, rate_window=10)
    batch = RegionRates(n_regions=4, n_in=8, n_steps=10, window=5).sample(0, 4)
    learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2), loss=region_rate_loss())
    return learner, batch


def run_tracer(name, net, params, state, xs, ts, ws, costs=None, **options):
    """Gradient of ``sum_t sum_b w l`` (plus the spike ``costs``, ``{population: (T, B, N)}``)
    by the rule ``name`` (``options`` passed to it, bound with the sequence as its window),
    one jitted ``lax.scan`` over the steps; ``xs`` is ``{input: (T, B, n)}``."""
    from traxon.learn import cross_entropy
    from traxon.trace import get_algorithm

    tracer = get_algorithm(name, **options).bind(net, cross_entropy.fn, window=ws.shape[0])
    tstate = tracer.init(params, state, target_example=ts[0])

    def body(carry, inp):
        st, tst = carry
        x, t, w, c = inp
        st, tst, out = tracer.step(params, st, tst, x, t, w, spike_cost=c or None)
        return (st, tst), out.loss

    inputs = (xs, ts, ws, costs or {})
    (_, tstate), _ = jax.jit(lambda c, i: jax.lax.scan(body, c, i))((state, tstate), inputs)
    return tracer.gradients(params, tstate)


def deferral_network(n_in: int):
    """The network of the tests of held factors (``es_d_rtrl``'s deferred accumulation and
    the learner's held SGD updates): two decay groups (ALIF), a leaky readout (filtered
    traces), recurrence, and a Dale-signed pair (never held: its outer product is masked by
    ``sign(W)``)."""
    from traxon.core import ALIF, LIF, Dense, Expon, Network, Population, Projection, Readout

    return Network(
        n_in,
        {"h": Population(ALIF(tau=10.0, tau_a=100.0, beta=0.5), 12), "i": Population(LIF(), 6)},
        [
            Projection("x", "h", Dense(gain=6.0), synapse=Expon(5.0)),
            Projection("h", "h", Dense(gain=1.0), synapse=Expon(5.0), delay=1),
            Projection("h", "i", Dense(gain=2.0, sign=1), synapse=Expon(5.0), delay=1),
            Projection("i", "h", Dense(gain=1.0, sign=-1), synapse=Expon(5.0)),
        ],
        readout=Readout("h", 2, tau=20.0),
    )


def spike_data(steps, batch, n_in, seed=1, dtype=np.float32):
    """Random input spikes ``(steps, batch, n_in)`` (probability 0.3), binary labels
    ``(steps, batch)`` and loss weights ``1 / batch``: one batch for the adapter tests."""
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    xs = (jax.random.uniform(k1, (steps, batch, n_in)) < 0.3).astype(dtype)
    ts = jax.random.randint(k2, (steps, batch), 0, 2)
    return xs, ts, jnp.ones((steps, batch), dtype) / batch


def rate_task_losses(learner, steps, n_in, batch=8, seed=0):
    """The loss of each of ``steps`` online steps of ``learner`` on a fixed batch: which of two
    groups of the ``n_in`` input channels (the first 3 and the rest) fires at 40% per step
    (the other at 2%)? Returns ``(mean of the first tenth, mean of the last tenth)``."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, batch)
    groups = np.repeat([0, 1], [3, n_in - 3])
    rates = np.where(label[:, None] == groups[None], 0.4, 0.02)
    losses = []
    for _ in range(steps):
        x = (rng.random((batch, n_in)) < rates).astype(np.float32)
        losses.append(learner.step(x, label)["loss"])
    tenth = steps // 10
    return np.mean(losses[:tenth]), np.mean(losses[-tenth:])


def assert_steps_compile_once(module, n_in):
    """An es_d_rtrl learner on ``module`` (batch 2) compiles its step once: the second and
    third steps, with other labels, reuse the first's program."""
    import traxon

    learner = traxon.online_learner(module, "es_d_rtrl", input_size=n_in)
    x = np.ones((2, n_in), np.float32)
    learner.step(x, np.array([0, 1]))
    size = learner._step_jit._cache_size()
    learner.step(x, np.array([1, 0]))
    learner.step(x, np.array([1, 1]))
    assert learner._step_jit._cache_size() == size


def rewrite_checkpoint_header(path, edit, out):
    """A copy of checkpoint ``path`` at ``out`` with its header changed by ``edit(meta)``
    (what another traxon version would have written); a header that keeps its checksum gets
    it computed anew."""
    from traxon.learn.checkpoint import _checksum

    with np.load(path) as data:
        entries = {k: np.array(data[k]) for k in data.files}
    meta = json.loads(bytes(entries["__traxon_meta__"]).decode())
    edit(meta)
    if "checksum" in meta:
        meta["checksum"] = _checksum(meta, [entries[f"leaf{i}"] for i in range(len(meta["keys"]))])
    entries["__traxon_meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(out, **entries)
    return out
