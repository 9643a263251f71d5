r"""Convolutional weight ops: a shared kernel from a flattened feature map to a population.

Populations are flat, ``(B, N)``. A convolution reads its source as a feature map of
``C_in`` channels over a spatial grid and writes a feature map of ``C_out`` channels, both
**channel-major** -- the layout of a ``(C, H, W)`` array reshaped to ``(C * H * W,)``:

.. math::
    z[b,\, (c\,H + y)\,W + x] = Z[b, c, y, x], \qquad
    u[b,\, (o\,H' + y')\,W' + x'] = \sum_{c, k_y, k_x}
        K[o, c, k_y, k_x]\; Z_{pad}[b, c,\, s_y y' + k_y,\, s_x x' + k_x]

so the source population has ``C_in * H * W`` neurons and the target ``C_out * H' * W'``;
each output channel is a map of neurons of one population (``Conv1D``: the same with one
spatial axis, ``(C, L)``). The kernel ``K`` has shape ``(C_out, C_in, *kernel_size)``.

**Which rules train a kernel.** One kernel entry drives every output position of its
channel, so it has no single postsynaptic neuron. The rules that keep one eligibility trace
per weight entry (``d_rtrl``, ``snap``, ``eprop``, ``ostl``, and ``es_d_rtrl``'s ``exact``
list) refuse a convolution when they are bound (the op's ``param_traces`` is ``False``).
``es_d_rtrl`` and ``three_factor`` use :meth:`~Conv2D.outer`, the kernel's batch-summed
gradient (the correlation of the presynaptic map with the postsynaptic one); ``bptt``,
``rtrl``, ``uoro`` and ``synthetic_gradients`` differentiate :meth:`~Conv2D.apply` itself.
``es_d_rtrl`` is exact where it is exact for a dense weight (one LIF population with no
recurrent weights, ``detach_reset=True``, the presynaptic decay equal to the membrane leak):
the untied per-position trace is :math:`F\,\bar x` at the input position each kernel entry
reads, and summing it over positions is ``outer``.

Dale's law: give ``sign`` (``+1``, ``-1`` or one sign per input channel); the kernel is then
used as :math:`|K|` times the sign of its input channel.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from traxon._checks import check_positive, check_positive_int, to_float
from traxon._module import static
from traxon.core.ops import WeightOp

__all__ = ["Conv1D", "Conv2D"]

_AXES = {1: "(C, L)", 2: "(C, H, W)"}


def _per_axis(value: Any, ndim: int, name: str, where: str, allow_zero: bool = False) -> tuple:
    """An int, or a sequence of ``ndim`` ints, as a tuple of ``ndim`` checked ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != ndim:
            raise ValueError(
                f"`{name}` of {where} must be an integer or {ndim} integers (one per spatial "
                f"axis); got {value!r}."
            )
        return tuple(check_positive_int(v, name, allow_zero=allow_zero, owner=where) for v in value)
    return (check_positive_int(value, name, allow_zero=allow_zero, owner=where),) * ndim


class _Conv(WeightOp):
    """Shared implementation of :class:`Conv1D` and :class:`Conv2D` (``ndim`` spatial axes)."""

    ndim: ClassVar[int] = 0

    in_channels: int = static()
    out_channels: int = static()
    kernel_size: Any = static()
    in_shape: Any = static()
    stride: Any = static(default=1)
    padding: Any = static(default="SAME")
    gain: float = 1.0
    sign: Any = static(default=None)

    def __post_init__(self) -> None:
        where = type(self).__name__
        n = self.ndim
        set_ = object.__setattr__
        set_(self, "in_channels", check_positive_int(self.in_channels, "in_channels", owner=where))
        set_(
            self, "out_channels", check_positive_int(self.out_channels, "out_channels", owner=where)
        )
        set_(self, "kernel_size", _per_axis(self.kernel_size, n, "kernel_size", where))
        set_(self, "in_shape", _per_axis(self.in_shape, n, "in_shape", where))
        set_(self, "stride", _per_axis(self.stride, n, "stride", where))
        padding = self.padding
        if isinstance(padding, str):
            if padding.upper() not in ("SAME", "VALID"):
                raise ValueError(
                    f"`padding` of {where} must be 'SAME', 'VALID', a non-negative integer or "
                    f"{n} of them; got {padding!r}."
                )
            padding = padding.upper()
        else:
            try:
                padding = _per_axis(padding, n, "padding", where, allow_zero=True)
            except ValueError:
                raise ValueError(
                    f"`padding` of {where} must be 'SAME', 'VALID', a non-negative integer or "
                    f"{n} of them; got {padding!r}."
                ) from None
        set_(self, "padding", padding)
        gain = to_float(self.gain, None, "gain")
        check_positive(gain, "gain", allow_zero=True)
        set_(self, "gain", gain)
        if self.sign is not None:
            set_(self, "sign", self._check_sign(self.sign, where))
        for size, k, lo_hi in zip(self.in_shape, self.kernel_size, self._pads(), strict=True):
            if size + lo_hi[0] + lo_hi[1] < k:
                raise ValueError(
                    f"`kernel_size` {self.kernel_size} of {where} is larger than its padded "
                    f"input {self.in_shape} (padding {self.padding!r}): no output position. "
                    "Use a smaller kernel, more padding or padding='SAME'."
                )

    def _check_sign(self, sign: Any, where: str) -> tuple[float, ...]:
        try:
            arr = np.atleast_1d(np.asarray(sign, dtype=np.float64))
        except (TypeError, ValueError):
            arr = None
        ok = arr is not None and arr.ndim == 1 and arr.size in (1, self.in_channels)
        if not ok or not np.all(np.isin(arr, (-1.0, 1.0))):  # type: ignore[arg-type]
            raise ValueError(
                f"`sign` of {where} must be +1, -1 or {self.in_channels} entries in {{+1, -1}} "
                f"(one per input channel); got {sign!r}."
            )
        assert arr is not None
        return tuple(np.broadcast_to(arr, (self.in_channels,)).tolist())

    # ----------------------------------------------------------------------------------
    # Shapes.

    def _pads(self) -> tuple[tuple[int, int], ...]:
        """``(low, high)`` padding per spatial axis."""
        if self.padding == "VALID":
            return ((0, 0),) * self.ndim
        if self.padding == "SAME":
            pads = []
            for size, k, s in zip(self.in_shape, self.kernel_size, self.stride, strict=True):
                out = -(-size // s)
                total = max((out - 1) * s + k - size, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        return tuple((p, p) for p in self.padding)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The source's feature map, ``(C_in, *in_shape)``; its flattened size is ``n_in``."""
        return (self.in_channels, *self.in_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The target's feature map, ``(C_out, *out_spatial)``; its flattened size is ``n_out``."""
        spatial = tuple(
            (size + lo + hi - k) // s + 1
            for size, k, s, (lo, hi) in zip(
                self.in_shape, self.kernel_size, self.stride, self._pads(), strict=True
            )
        )
        return (self.out_channels, *spatial)

    @property
    def n_in(self) -> int:
        """Neurons of the source population: ``C_in * prod(in_shape)``."""
        return math.prod(self.input_shape)

    @property
    def n_out(self) -> int:
        """Neurons of the target population: ``C_out * prod(out_spatial)``."""
        return math.prod(self.output_shape)

    @property
    def param_traces(self) -> bool:
        """``False``: a kernel entry drives many postsynaptic neurons (weight sharing)."""
        return False

    @property
    def param_traces_hint(self) -> str:
        """The advice given when a rule that needs per-entry traces refuses this op."""
        return (
            "A convolution kernel entry drives every output position of its channel. Use "
            "algorithm='es_d_rtrl' (without this weight in `exact`), 'rtrl' (small networks) "
            "or 'bptt'."
        )

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        name = type(self).__name__
        axes = _AXES[self.ndim]
        if n_in != self.n_in:
            raise ValueError(
                f"{name} in {where} reads an input feature map {axes} = {self.input_shape}, "
                f"flattened channel-major to {self.n_in} neurons; the source has {n_in}. Give "
                "in_channels and in_shape that multiply to the source's size."
            )
        if n_out != self.n_out:
            raise ValueError(
                f"{name} in {where} writes an output feature map {axes} = {self.output_shape}, "
                f"flattened channel-major to {self.n_out} neurons; the target has {n_out}. "
                f"Make the target population {self.n_out} neurons (out_channels * output "
                "positions), or change out_channels, stride or padding."
            )

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        shape = self.weight_shape(n_in, n_out)
        fan_in = self.in_channels * math.prod(self.kernel_size)
        w = jax.random.normal(key, shape, dtype) * (self.gain / math.sqrt(fan_in))
        return jnp.abs(w) if self.sign is not None else w

    # ----------------------------------------------------------------------------------
    # The operation.

    def _sign_array(self, dtype: Any) -> jax.Array:
        s = jnp.asarray(self.sign, dtype)
        return s.reshape((1, self.in_channels) + (1,) * self.ndim)

    def _effective(self, W: jax.Array) -> jax.Array:
        if self.sign is None:
            return W
        return jnp.abs(W) * self._sign_array(W.dtype)

    def _conv(self, kernel: jax.Array, z: jax.Array) -> jax.Array:
        """The convolution of flattened maps ``z`` ``(B, n_in)`` -> ``(B, n_out)``."""
        dtype = jnp.result_type(kernel.dtype, z.dtype)
        maps = z.astype(dtype).reshape((z.shape[0], *self.input_shape))
        spatial = "HW"[: self.ndim]
        out = jax.lax.conv_general_dilated(
            maps,
            kernel.astype(dtype),
            window_strides=self.stride,
            padding=self._pads(),
            dimension_numbers=(f"NC{spatial}", f"OI{spatial}", f"NC{spatial}"),
        )
        return out.reshape((z.shape[0], self.n_out))

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return self._conv(self._effective(W), z)

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        """The kernel gradient :math:`\\sum_b \\partial \\langle post_b, K * pre_b\\rangle /
        \\partial W`: the correlation of each input map with each output map."""
        kernel = self._effective(W)
        _, transpose = jax.vjp(lambda k: self._conv(k, pre.astype(W.dtype)), kernel)
        (g,) = transpose(post.astype(kernel.dtype))
        g = g.astype(W.dtype)
        if self.sign is None:
            return g
        return g * self._sign_array(W.dtype) * jnp.sign(W)

    def _no_param_traces(self) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__} shares each kernel entry among all output positions of a "
            "channel, so a weight entry has no single postsynaptic neuron and "
            "parameter-dimension traces are not available. Use algorithm='es_d_rtrl', "
            "'rtrl' (small networks) or 'bptt'."
        )

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        raise self._no_param_traces()

    def to_params(self, x: jax.Array) -> jax.Array:
        raise self._no_param_traces()


class Conv2D(_Conv):
    r"""A 2-D convolution from a ``(C_in, H, W)`` map to a ``(C_out, H', W')`` population.

    Both maps are flattened channel-major (a ``(C, H, W)`` array reshaped), so the source
    population has ``C_in * H * W`` neurons and the target ``C_out * H' * W'``
    (:attr:`output_shape` gives ``(C_out, H', W')``). The kernel has shape
    ``(C_out, C_in, kh, kw)``. See :mod:`traxon.core.conv` for the equation and for which
    learning rules train it (``es_d_rtrl``, ``bptt``, ``rtrl``, not ``d_rtrl``).

    Arguments:
        in_channels: ``C_in``, channels of the input map.
        out_channels: ``C_out``, channels of the output map (each one a map of neurons).
        kernel_size: ``k`` or ``(kh, kw)``.
        in_shape: the input's spatial shape ``(H, W)`` (an int for a square map).
        stride: ``s`` or ``(sh, sw)``.
        padding: ``'SAME'`` (output ``ceil(H / s)``; zeros split evenly, the extra one
            after), ``'VALID'`` (none), or ``p`` / ``(ph, pw)`` zeros on both sides.
        gain: initial kernel entries are :math:`\mathcal{N}(0, \mathrm{gain}^2 / (C_{in}
            k_h k_w))`.
        sign: Dale's law (``+1``/``-1``/one per input channel); the kernel is used as
            ``sign * |K|``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from traxon.core import Conv2D
        >>> op = Conv2D(2, 4, kernel_size=3, in_shape=(8, 8), stride=2)
        >>> op.output_shape, op.n_in, op.n_out
        ((4, 4, 4), 128, 64)
        >>> W = op.init(jax.random.PRNGKey(0), op.n_in, op.n_out, jnp.float32)
        >>> W.shape, op.apply(W, jnp.ones((3, 128))).shape
        ((4, 2, 3, 3), (3, 64))
    """

    ndim: ClassVar[int] = 2


class Conv1D(_Conv):
    r"""A 1-D convolution from a ``(C_in, L)`` map to a ``(C_out, L')`` population.

    Both maps are flattened channel-major (a ``(C, L)`` array reshaped), so the source
    population has ``C_in * L`` neurons and the target ``C_out * L'``. The kernel has
    shape ``(C_out, C_in, k)``. Arguments as for :class:`Conv2D`, with one spatial axis
    (``in_shape`` is ``L`` or ``(L,)``).

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import Conv1D
        >>> op = Conv1D(1, 1, kernel_size=2, in_shape=4, padding="VALID")
        >>> op.apply(jnp.ones((1, 1, 2)), jnp.array([[1.0, 2.0, 3.0, 4.0]]))
        Array([[3., 5., 7.]], dtype=float32)
    """

    ndim: ClassVar[int] = 1
