"""Checkpoints of any pytree in a safe format: a NumPy ``.npz`` archive, no pickle.

Each leaf is stored under its key path; a JSON header records the tree's layout (paths,
shapes, dtypes) and a caller-supplied fingerprint (for the learner: the network's
structure and the algorithm). Writes go to a temporary file in the same directory that is
then renamed over the target, so a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["load_checkpoint", "save_checkpoint"]

_META = "__traxon_meta__"
_FORMAT = 1


def _flatten(tree: Any) -> tuple[list[str], list[np.ndarray]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    keys = [jax.tree_util.keystr(path) for path, _ in leaves]
    return keys, [np.asarray(leaf) for _, leaf in leaves]


def save_checkpoint(path: str | os.PathLike, tree: Any, fingerprint: Any = None) -> Path:
    """Write ``tree`` (a pytree of arrays) to ``path`` atomically.

    Arguments:
        path: target file (``.npz`` is appended if missing).
        tree: the pytree to save.
        fingerprint: JSON-serialisable description checked again on load.

    Returns:
        The path written.

    Example:
        >>> import jax.numpy as jnp, tempfile, os
        >>> from traxon.learn import save_checkpoint, load_checkpoint
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
        >>> _ = save_checkpoint(p, {"w": jnp.ones(3)}, fingerprint={"net": "demo"})
        >>> load_checkpoint(p, {"w": jnp.zeros(3)}, fingerprint={"net": "demo"})["w"]
        Array([1., 1., 1.], dtype=float32)
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    keys, arrays = _flatten(tree)
    meta = {
        "format": _FORMAT,
        "keys": keys,
        "shapes": [list(a.shape) for a in arrays],
        "dtypes": [str(a.dtype) for a in arrays],
        "fingerprint": fingerprint,
    }
    payload: dict[str, Any] = {f"leaf{i}": a for i, a in enumerate(arrays)}
    payload[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, like: Any, fingerprint: Any = None) -> Any:
    """Read a checkpoint into the structure of ``like``, checking it first.

    Raises ``FileNotFoundError`` if missing, ``ValueError`` if the file is corrupted, was
    written for a different network (fingerprint), or its leaves do not match ``like``
    (paths, shapes, dtypes) -- the message names the first mismatching leaf.

    Example:
        >>> import jax.numpy as jnp, os, tempfile
        >>> from traxon.learn import load_checkpoint, save_checkpoint
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = save_checkpoint(os.path.join(folder.name, "ckpt"), {"w": jnp.ones(2)})
        >>> path.name
        'ckpt.npz'
        >>> load_checkpoint(path, {"w": jnp.zeros(2)})["w"]
        Array([1., 1.], dtype=float32)
        >>> load_checkpoint(path, {"w": jnp.zeros(3)})
        Traceback (most recent call last):
            ...
        ValueError: checkpoint leaf `['w']` has shape (2,) and dtype float32; expected ...
        >>> folder.cleanup()
    """
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".npz").exists():
        path = path.with_name(path.name + ".npz")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}.")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data[_META]).decode())
            arrays = [np.array(data[f"leaf{i}"]) for i in range(len(meta["keys"]))]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupted or not a traxon checkpoint: {err}"
        ) from err
    if meta.get("format") != _FORMAT:
        raise ValueError(
            f"checkpoint {str(path)!r} has format {meta.get('format')}; expected {_FORMAT}."
        )
    if fingerprint is not None and meta.get("fingerprint") != json.loads(json.dumps(fingerprint)):
        raise ValueError(
            f"checkpoint {str(path)!r} was written for a different network or learner.\n"
            f"  checkpoint: {json.dumps(meta.get('fingerprint'), sort_keys=True)}\n"
            f"  this one:   {json.dumps(fingerprint, sort_keys=True)}"
        )
    keys, leaves = _flatten(like)
    if keys != meta["keys"]:
        missing = sorted(set(keys) - set(meta["keys"]))
        extra = sorted(set(meta["keys"]) - set(keys))
        raise ValueError(
            f"checkpoint {str(path)!r} does not match the expected state: missing {missing[:5]}, "
            f"unexpected {extra[:5]}."
        )
    for key, want, got in zip(keys, leaves, arrays, strict=True):
        if want.shape != got.shape or want.dtype != got.dtype:
            raise ValueError(
                f"checkpoint leaf `{key}` has shape {got.shape} and dtype {got.dtype}; expected "
                f"shape {want.shape} and dtype {want.dtype}."
            )
    treedef = jax.tree_util.tree_structure(like)
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in arrays])
