"""Spiking Heidelberg Digits (Cramer et al. 2020): a loader for the standard HDF5 files.

An SHD file holds, for ``N`` examples,

* ``spikes/times`` -- a variable-length dataset: per example a float array of spike times in
  seconds,
* ``spikes/units`` -- a variable-length dataset: per example an integer array of channel ids
  (``0..699`` for the 700 cochlea channels), and
* ``labels`` -- ``(N,)`` integer class labels (20 classes: digits 0-9 in English and German).

No data ships with traxon: download ``shd_train.h5`` / ``shd_test.h5`` yourself and pass
their paths. :func:`write_shd_file` writes a file in the same format (handy for tests).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from traxon.tasks.base import (
    Batch,
    Task,
    check_float,
    check_int,
    check_readout_steps,
    labelled_batch,
)

__all__ = ["SpikingHeidelbergDigits", "write_shd_file"]

_DATASETS = ("spikes/times", "spikes/units", "labels")


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'Reading SHD files needs h5py (an optional extra): pip install "traxon[examples]"'
        ) from err
    return h5py


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _unreadable(path: Path, err: OSError) -> OSError | ValueError:
    """The error for an SHD file h5py cannot read, naming the file and saying why."""
    if not os.access(path, os.R_OK):
        return PermissionError(errno.EACCES, f"cannot read SHD file '{path}' (permission denied)")
    expected = (
        "expected an HDF5 file with `spikes/times`, `spikes/units` and `labels` (the format "
        "of Cramer et al. 2020, e.g. shd_train.h5)"
    )
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        reason = "it is empty (an interrupted download?)"
    elif head != _HDF5_SIGNATURE:
        reason = f"it is not an HDF5 file (it starts with {head!r})"
    else:
        reason = (
            f"it is truncated or damaged (h5py: {err or type(err).__name__}); download it again"
        )
    return ValueError(f"cannot read SHD file '{path}': {reason}; {expected}.")


def write_shd_file(
    path: str | os.PathLike[str],
    times: Sequence[Any],
    units: Sequence[Any],
    labels: Sequence[int] | np.ndarray,
) -> Path:
    """Write spike data to an HDF5 file in the SHD format.

    Arguments:
        path: file to create (overwritten if it exists).
        times: per example, a 1-D array of spike times in seconds.
        units: per example, a 1-D array of non-negative integer channel ids, as long as the
            matching ``times``.
        labels: per example, a non-negative integer class label.

    Returns:
        The path written, as a ``pathlib.Path``.

    Example:
        >>> import tempfile, pathlib
        >>> from traxon.tasks import write_shd_file, SpikingHeidelbergDigits
        >>> tmp = pathlib.Path(tempfile.mkdtemp()) / "tiny.h5"
        >>> path = write_shd_file(tmp, [[0.1, 0.5], [0.9]], [[0, 3], [2]], [0, 1])
        >>> SpikingHeidelbergDigits(path, n_channels=4, n_steps=10).n_examples("train")
        2
    """
    h5py = _import_h5py()
    n = len(labels)
    if len(times) != n or len(units) != n:
        raise ValueError(
            f"`times`, `units` and `labels` must have one entry per example; got lengths "
            f"{len(times)}, {len(units)} and {n}."
        )
    times_list = [np.asarray(t, np.float32).reshape(-1) for t in times]
    units_list = [np.asarray(u).reshape(-1) for u in units]
    for i, (t, u) in enumerate(zip(times_list, units_list, strict=True)):
        if t.size != u.size:
            raise ValueError(
                f"`times[{i}]` and `units[{i}]` must have the same length; got {t.size} and "
                f"{u.size}."
            )
        if u.size and (not np.issubdtype(u.dtype, np.integer) or u.min() < 0):
            raise ValueError(f"`units[{i}]` must hold non-negative integers; got {u!r}.")
    labels_arr = np.asarray(labels).reshape(-1)
    if labels_arr.size and (
        not np.issubdtype(labels_arr.dtype, np.integer) or labels_arr.min() < 0
    ):
        raise ValueError(f"`labels` must hold non-negative integers; got {labels_arr!r}.")
    max_unit = max((int(u.max()) for u in units_list if u.size), default=0)
    unit_dtype = np.uint16 if max_unit < 2**16 else np.uint32
    label_dtype = np.uint8 if labels_arr.size == 0 or labels_arr.max() < 2**8 else np.int32

    path = Path(path)
    with h5py.File(path, "w") as f:
        spikes = f.create_group("spikes")
        ds_t = spikes.create_dataset("times", shape=(n,), dtype=h5py.vlen_dtype(np.float32))
        ds_u = spikes.create_dataset("units", shape=(n,), dtype=h5py.vlen_dtype(unit_dtype))
        for i in range(n):
            ds_t[i] = times_list[i]
            ds_u[i] = units_list[i].astype(unit_dtype)
        f.create_dataset("labels", data=labels_arr.astype(label_dtype))
    return path


class SpikingHeidelbergDigits(Task):
    """The Spiking Heidelberg Digits, binned into ``n_steps`` time bins.

    Spikes at times ``t`` in ``[0, max_time_s)`` fall into bin ``floor(t / max_time_s *
    n_steps)``; later spikes are dropped. Channel ``c`` maps to input ``c // downsample``
    (``n_in = n_channels // downsample``; when ``downsample`` does not divide ``n_channels``
    the last ``n_channels % downsample`` channels are dropped). Each bin holds 1.0 if it
    received any spike (``binary=True``) or the spike count (``binary=False``). The step
    length is ``dt = 1000 * max_time_s / n_steps`` ms.

    Both files are read into memory at construction. ``sample(rng, B, split)`` draws ``B``
    distinct random examples of the split (with replacement only when ``B`` exceeds its
    size); ``epoch(batch_size, split)`` visits every example of the split once, in file
    order. The target ``y`` is the label at every step; ``mask`` is 1 on the last
    ``readout_steps`` steps (all by default).

    Arguments:
        train_path: path of the training file (e.g. ``shd_train.h5``).
        test_path: path of the test file (e.g. ``shd_test.h5``); ``split="test"`` needs it.
        n_steps: number of time bins ``T``.
        max_time_s: length of the binned window, in seconds.
        n_channels: number of channels in the files (700 for SHD); larger ids raise.
        downsample: pool this many neighbouring channels into one input.
        binary: clip bins to 1 (``True``) or keep spike counts (``False``).
        n_classes: ``n_out``; 20 for SHD. ``None`` means ``max label + 1`` over the loaded
            files. Labels ``>= n_classes`` raise.
        readout_steps: number of final steps with ``mask == 1``; ``None`` means all steps.

    ``sample_with_info`` returns ``info["index"]``, the ``(B,)`` positions of the examples in
    the split's file.

    Raises:
        FileNotFoundError: if a path does not exist.
        ValueError: if a file is not an HDF5 file (empty, text, truncated or damaged), lacks
            ``spikes/times``, ``spikes/units`` or ``labels``, or its contents do not fit the
            arguments; the message names the file.
        PermissionError: if a file cannot be read.
        ImportError: if h5py is not installed (``pip install "traxon[examples]"``).

    Example:
        >>> import tempfile, pathlib
        >>> from traxon.tasks import SpikingHeidelbergDigits, write_shd_file
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> write_shd_file(tmp / "a.h5", [[0.05, 0.06, 0.55]], [[1, 1, 6]], [2]).name
        'a.h5'
        >>> task = SpikingHeidelbergDigits(tmp / "a.h5", n_steps=10, n_channels=8, downsample=2,
        ...                                binary=False, n_classes=None)
        >>> task.n_in, task.n_out, task.dt
        (4, 3, 100.0)
        >>> batch = next(task.epoch(batch_size=1, split="train"))
        >>> float(batch.x[0, 0, 0]), float(batch.x[5, 0, 3]), float(batch.x.sum())
        (2.0, 1.0, 3.0)
    """

    name = "shd"
    kind = "classification"

    def __init__(
        self,
        train_path: str | os.PathLike[str],
        test_path: str | os.PathLike[str] | None = None,
        n_steps: int = 100,
        max_time_s: float = 1.0,
        n_channels: int = 700,
        downsample: int = 1,
        binary: bool = True,
        n_classes: int | None = 20,
        readout_steps: int | None = None,
    ) -> None:
        self.n_steps = check_int(n_steps, "n_steps", minimum=1)
        self.max_time_s = check_float(max_time_s, "max_time_s", minimum=0.0, strict=True)
        self.n_channels = check_int(n_channels, "n_channels", minimum=1)
        self.downsample = check_int(downsample, "downsample", minimum=1)
        if self.downsample > self.n_channels:
            raise ValueError(
                f"`downsample` must be <= `n_channels` ({self.n_channels}); got {self.downsample}."
            )
        if not isinstance(binary, (bool, np.bool_)):
            raise TypeError(f"`binary` must be True or False; got {binary!r}.")
        self.binary = bool(binary)
        self.readout_steps = check_readout_steps(readout_steps, self.n_steps)
        self.n_in = self.n_channels // self.downsample
        self.dt = 1000.0 * self.max_time_s / self.n_steps

        self.train_path = self._check_path(train_path, "train_path")
        self.test_path = None if test_path is None else self._check_path(test_path, "test_path")
        h5py = _import_h5py()
        self._data = {"train": self._load(h5py, self.train_path)}
        if self.test_path is not None:
            self._data["test"] = self._load(h5py, self.test_path)

        max_label = max(int(lab.max()) for _, lab in self._data.values() if lab.size)
        if n_classes is None:
            self.n_out = max_label + 1
        else:
            self.n_out = check_int(n_classes, "n_classes", minimum=1)
            if max_label >= self.n_out:
                raise ValueError(
                    f"`n_classes` must exceed every label; got n_classes={self.n_out} but the "
                    f"files hold label {max_label}. Pass n_classes=None to use max label + 1."
                )

    @staticmethod
    def _check_path(path: Any, name: str) -> Path:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"`{name}` must be a path (str or os.PathLike); got {path!r}.")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"`{name}`: SHD file not found: '{path}'.")
        return path

    def _load(self, h5py: Any, path: Path) -> tuple[list[np.ndarray], np.ndarray]:
        """Read one file and precompute, per example, the flat ``step * n_in + input`` index
        of each kept spike."""
        try:
            with h5py.File(path, "r") as f:
                for key in _DATASETS:
                    if key not in f:
                        raise ValueError(
                            f"SHD file '{path}' has no dataset `{key}`; expected `spikes/times`, "
                            f"`spikes/units` and `labels` (the format of Cramer et al. 2020)."
                        )
                times = f["spikes/times"][()]
                units = f["spikes/units"][()]
                labels = np.asarray(f["labels"][()]).reshape(-1)
        except OSError as err:  # h5py reports every unreadable file as a bare OSError
            raise _unreadable(path, err) from err
        if not (len(times) == len(units) == labels.size):
            raise ValueError(
                f"SHD file '{path}': `spikes/times`, `spikes/units` and `labels` must have one "
                f"entry per example; got {len(times)}, {len(units)} and {labels.size}."
            )
        if labels.size == 0:
            raise ValueError(f"SHD file '{path}' holds no examples.")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError(
                f"SHD file '{path}': `labels` must be non-negative integers; got values "
                f"{np.unique(labels)[:10].tolist()}."
            )
        flat = []
        for i, (t, u) in enumerate(zip(times, units, strict=True)):
            t = np.asarray(t, np.float64).reshape(-1)
            u = np.asarray(u, np.int64).reshape(-1)
            if t.size != u.size:
                raise ValueError(
                    f"SHD file '{path}': example {i} has {t.size} spike times but {u.size} units."
                )
            if u.size and (u.min() < 0 or u.max() >= self.n_channels):
                raise ValueError(
                    f"SHD file '{path}': example {i} has channel ids in [{u.min()}, {u.max()}], "
                    f"outside [0, `n_channels`) with n_channels={self.n_channels}."
                )
            inputs = u // self.downsample
            keep = (t >= 0.0) & (t < self.max_time_s) & (inputs < self.n_in)
            steps = np.floor(t[keep] / self.max_time_s * self.n_steps).astype(np.int64)
            steps = np.minimum(steps, self.n_steps - 1)  # guard float round-up at the edge
            flat.append((steps * self.n_in + inputs[keep]).astype(np.int32))
        return flat, labels.astype(np.int32)

    def _check_split(self, split: Any) -> int:
        split_id = super()._check_split(split)
        if split == "test" and self.test_path is None:
            raise ValueError(
                "`split` = 'test' needs a test file, but this SpikingHeidelbergDigits was built "
                "with test_path=None; pass test_path (e.g. 'shd_test.h5') or use split='train'."
            )
        return split_id

    def n_examples(self, split: str = "test") -> int:
        """Number of examples in a split's file (what one :meth:`epoch` visits).

        Arguments:
            split: ``"train"`` or ``"test"`` (``"test"`` needs ``test_path``).

        Returns:
            The number of examples.

        Example:
            >>> import tempfile, pathlib
            >>> from traxon.tasks import SpikingHeidelbergDigits, write_shd_file
            >>> p = write_shd_file(pathlib.Path(tempfile.mkdtemp()) / "t.h5", [[0.1]], [[0]], [0])
            >>> SpikingHeidelbergDigits(p, test_path=p, n_channels=1).n_examples("test")
            1
        """
        self._check_split(split)
        return int(self._data[split][1].size)

    def _batch(self, index: np.ndarray, split: str) -> Batch:
        flat, labels = self._data[split]
        size = self.n_steps * self.n_in
        counts = np.stack([np.bincount(flat[i], minlength=size) for i in index], axis=1)
        x = counts.reshape(self.n_steps, self.n_in, index.size).transpose(0, 2, 1)
        if self.binary:
            x = np.minimum(x, 1)
        label = labels[index]
        x = np.ascontiguousarray(x, np.float32)
        return labelled_batch(x, label, self.n_steps, self.readout_steps)

    def _draw(
        self, rng: np.random.Generator, batch_size: int, split: str
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        n = self._data[split][1].size
        index = rng.choice(n, size=batch_size, replace=batch_size > n)
        return self._batch(index, split), {"index": index}

    def _epoch_chunk(self, rng: np.random.Generator, start: int, stop: int, split: str) -> Batch:
        return self._batch(np.arange(start, stop), split)

    def _config(self) -> dict[str, Any]:
        return {
            "train_path": str(self.train_path),
            "test_path": None if self.test_path is None else str(self.test_path),
            "n_steps": self.n_steps,
            "max_time_s": self.max_time_s,
            "n_channels": self.n_channels,
            "downsample": self.downsample,
            "binary": self.binary,
        }
