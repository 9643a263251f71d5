"""Checkpoints of any pytree in a safe format: a NumPy ``.npz`` archive, no pickle.

Each leaf is stored under its key path; a JSON header records the tree's layout (paths,
shapes, dtypes), a caller-supplied fingerprint (for the learner: the network's
configuration and the algorithm) and a SHA-256 checksum of the header and every leaf, so a
damaged file is refused rather than restored.

Writes go to a hidden temporary file in the same folder (created with the default
permissions, so the umask applies) that is then renamed over the target: a crash mid-save
leaves the previous checkpoint intact. A temporary file left by a writer that was killed
(``kill -9``, power loss) is removed by the next save to that folder.

Every file that cannot be restored raises :class:`CheckpointError` (a ``ValueError``) with
the file's path and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from traxon._checks import warn

__all__ = ["CheckpointError", "checkpoint_path", "load_checkpoint", "save_checkpoint"]

_META = "__traxon_meta__"
_FORMAT = 2  # 2: with a checksum; format 1 (no checksum) is still read
_READABLE = (1, 2)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (an empty one: the second)

# Hidden temporary files: ".<target>.<host>-<pid>-<random>.tmp". The host and the writer's
# process id tell the next save whether the writer is gone.
_TMP = re.compile(r"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-z]{8}\.tmp$")
_QUIET_S = 60.0  # a writer that is gone has not touched its file for this long
_STALE_AFTER_S = 3600.0  # a temporary file of another host (or a reused pid) is stale after


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored: not a traxon checkpoint, damaged (truncated,
    bit flips), or written for another network or state. The message names the file and
    says why.

    Example:
        >>> import os, tempfile, traxon
        >>> path = os.path.join(tempfile.mkdtemp(), "notes.npz")
        >>> with open(path, "w") as f:
        ...     _ = f.write("hello")
        >>> try:
        ...     traxon.load_checkpoint(path, {})
        ... except traxon.CheckpointError as err:
        ...     print(str(err).split(": ", 1)[1])
        it is not a traxon checkpoint: not a NumPy .npz archive (it starts with b'hello').
    """


def _flatten(tree: Any) -> tuple[list[str], list[np.ndarray]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    keys = [jax.tree_util.keystr(path) for path, _ in leaves]
    return keys, [np.asarray(leaf) for _, leaf in leaves]


def _checksum(meta: dict[str, Any], arrays: list[np.ndarray]) -> str:
    """SHA-256 of the header (without its checksum) and of every leaf's bytes."""
    digest = hashlib.sha256()
    header = {k: v for k, v in meta.items() if k != "checksum"}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for a in arrays:
        digest.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data)
    return "sha256:" + digest.hexdigest()


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there: never ask
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists but is not ours
        return True
    return True


def _stale_temporaries(folder: Path) -> Iterator[Path]:
    """Temporary files of this module in ``folder`` whose writer is gone: untouched for a
    minute and written on this host by a process that has exited, or (another host sharing
    the folder, a reused process id) untouched for an hour."""
    host, now = _host_tag(), time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TMP.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:  # removed meanwhile
            continue
        same_host = match["host"] == host
        dead = same_host and age > _QUIET_S and not _pid_alive(int(match["pid"]))
        if dead or age > _STALE_AFTER_S:
            yield Path(entry.path)


def _clean_stale(folder: Path) -> None:
    for stale in _stale_temporaries(folder):
        # Another process may have removed it, or we may not: then leave it.
        with contextlib.suppress(OSError):
            stale.unlink()


def _os_error(err: OSError, message: str) -> OSError:
    """An error of the same type as ``err`` (``PermissionError``, ...) with ``message`` and
    the system's reason."""
    reason = err.strerror or str(err) or type(err).__name__
    text = f"{message}: {reason}"
    try:
        return type(err)(err.errno, text) if err.errno is not None else type(err)(text)
    except TypeError:  # a subclass with another constructor
        return OSError(err.errno, text)


def _prepare_folder(path: Path) -> None:
    """Create the target's folder, or raise an ``OSError`` that says what is in the way."""
    folder = path.parent
    for ancestor in (folder, *folder.parents):
        if ancestor.is_symlink() and not ancestor.exists():
            raise NotADirectoryError(
                errno.ENOTDIR,
                f"cannot save checkpoint '{path}': '{ancestor}' is a broken symbolic link "
                f"(to '{os.readlink(ancestor)}')",
            )
        if ancestor.exists():
            if not ancestor.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR,
                    f"cannot save checkpoint '{path}': '{ancestor}' is a file, not a folder",
                )
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _os_error(
            err, f"cannot save checkpoint '{path}': cannot create the folder '{folder}'"
        ) from err
    if path.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, f"cannot save checkpoint '{path}': it is a folder; name a file in it"
        )


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file beside ``path``, with the default permissions (the umask applies)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tag = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(8))
        tmp = path.with_name(f".{path.name}.{_host_tag()}-{os.getpid()}-{tag}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as err:
            raise _os_error(
                err, f"cannot save checkpoint '{path}': cannot write in the folder '{path.parent}'"
            ) from err
    raise FileExistsError(errno.EEXIST, f"cannot save checkpoint '{path}': no free temporary name")


def save_checkpoint(path: str | os.PathLike, tree: Any, fingerprint: Any = None) -> Path:
    """Write ``tree`` (a pytree of arrays) to ``path`` atomically.

    Arguments:
        path: target file (``.npz`` is appended if missing).
        tree: the pytree to save.
        fingerprint: JSON-serialisable description checked again on load.

    Returns:
        The path written.

    Raises:
        OSError: the folder cannot be created or written (the message says why), or the
            disk is full; the previous checkpoint at ``path`` is left as it was.

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
    keys, arrays = _flatten(tree)
    meta: dict[str, Any] = {
        "format": _FORMAT,
        "keys": keys,
        "shapes": [list(a.shape) for a in arrays],
        "dtypes": [str(a.dtype) for a in arrays],
        "fingerprint": fingerprint,
    }
    meta = json.loads(json.dumps(meta))  # the header exactly as it will be read back
    meta["checksum"] = _checksum(meta, arrays)
    payload: dict[str, Any] = {f"leaf{i}": a for i, a in enumerate(arrays)}
    payload[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _prepare_folder(path)
    _clean_stale(path.parent)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):  # a full disk, a quota: say which save failed
            raise _os_error(
                err, f"cannot save checkpoint '{path}' (the previous one, if any, is intact)"
            ) from err
        raise
    return path


def checkpoint_path(path: str | os.PathLike) -> Path:
    """The file a checkpoint ``path`` refers to: ``path`` itself when it exists (whatever
    its extension), else ``path`` with ``.npz`` appended (as :func:`save_checkpoint` names
    it). Raises ``FileNotFoundError`` when neither exists.

    Example:
        >>> import jax.numpy as jnp, os, tempfile
        >>> from traxon.learn.checkpoint import checkpoint_path, save_checkpoint
        >>> folder = tempfile.mkdtemp()
        >>> _ = save_checkpoint(os.path.join(folder, "run"), {"w": jnp.ones(2)})
        >>> checkpoint_path(os.path.join(folder, "run")).name
        'run.npz'
    """
    path = Path(path)
    with_npz = path.with_name(path.name + ".npz")
    if path.is_file():
        return path
    if path.suffix != ".npz" and with_npz.is_file():
        return with_npz
    if path.exists():
        return path  # a folder, say: reading it says so
    also = f" (nor '{with_npz}')" if path.suffix != ".npz" else ""
    raise FileNotFoundError(f"no checkpoint at '{path}'{also}.")


def _fail(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"cannot restore checkpoint '{path}': {reason}")


def _low_level(err: BaseException) -> str:
    """The library's own words, unless they invite loading with pickle."""
    text = str(err)
    if "pickle" in text.lower() or not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text}"


def _check_meta(path: Path, meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise _fail(path, "its header is damaged (not a JSON object).")
    version = meta.get("format")
    if version not in _READABLE:
        raise _fail(
            path,
            f"it has format {version!r}; this traxon reads formats {list(_READABLE)} (a "
            "checkpoint of a newer traxon?).",
        )
    fields = [meta.get(k) for k in ("keys", "shapes", "dtypes")]
    if (
        not all(isinstance(f, list) for f in fields)
        or len({len(f) for f in fields}) != 1  # type: ignore[arg-type]
        or not all(isinstance(k, str) for k in fields[0])  # type: ignore[union-attr]
        or not all(
            isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s)
            for s in fields[1]  # type: ignore[union-attr]
        )
        or not all(isinstance(d, str) for d in fields[2])  # type: ignore[union-attr]
    ):
        raise _fail(path, "its header is damaged (the list of leaves is malformed).")
    if version >= 2 and not isinstance(meta.get("checksum"), str):
        raise _fail(path, "its header is damaged (no checksum).")
    return meta


def _read(path: Path, leaves: bool) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The header and (with ``leaves``) the arrays of a checkpoint, checked; every way a
    file can fail to be a sound checkpoint raises :class:`CheckpointError`."""
    if path.is_dir():
        raise _fail(path, "it is a folder, not a file.")
    with open(path, "rb") as fh:  # OSError (permission) names the file itself
        head = fh.read(4)
        if not head:
            raise _fail(path, "the file is empty (a save that never finished?).")
        if head not in _ZIP_MAGIC:
            fh.seek(0)
            start = fh.read(16)
            raise _fail(
                path,
                f"it is not a traxon checkpoint: not a NumPy .npz archive (it starts with "
                f"{start!r}).",
            )
        fh.seek(0)
        try:
            with np.load(fh, allow_pickle=False) as data:
                if _META not in data.files and any(n.startswith("leaf") for n in data.files):
                    raise _fail(path, f"it is damaged: its `{_META}` header is missing.")
                if _META not in data.files:
                    raise _fail(
                        path,
                        f"it is not a traxon checkpoint: a NumPy archive without the "
                        f"`{_META}` header (its entries: {sorted(data.files)[:5]}).",
                    )
                try:
                    meta = json.loads(bytes(data[_META]).decode())
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise _fail(path, "its header is damaged (not valid JSON).") from err
                meta = _check_meta(path, meta)
                arrays: list[np.ndarray] = []
                if leaves:
                    for i in range(len(meta["keys"])):
                        name = f"leaf{i}"
                        if name not in data.files:
                            raise _fail(path, f"it is truncated or damaged: `{name}` is missing.")
                        arrays.append(np.array(data[name]))
        except CheckpointError:
            raise
        except Exception as err:  # zipfile, zlib, numpy's format reader: all "damaged"
            raise _fail(
                path,
                f"the archive is truncated or damaged ({_low_level(err)}). Restore an "
                "earlier copy; saves are atomic, so an interrupted save never leaves this.",
            ) from err
    if leaves:
        for key, shape, dtype, a in zip(
            meta["keys"], meta["shapes"], meta["dtypes"], arrays, strict=True
        ):
            if list(a.shape) != shape or str(a.dtype) != dtype:
                raise _fail(
                    path,
                    f"it is damaged: leaf `{key}` has shape {a.shape} and dtype {a.dtype}, but "
                    f"its header says {tuple(shape)} and {dtype}.",
                )
        if meta["format"] >= 2 and _checksum(meta, arrays) != meta["checksum"]:
            raise _fail(
                path,
                "it is damaged: its contents do not match the checksum they were saved with "
                "(bit flips, or an incomplete copy). Restore an earlier copy.",
            )
    return meta, arrays


def read_checkpoint_header(path: str | os.PathLike) -> dict[str, Any]:
    """The checked header of a checkpoint (``keys``, ``shapes``, ``dtypes``, ``fingerprint``)
    without reading its arrays. Raises ``FileNotFoundError`` or :class:`CheckpointError`."""
    return _read(checkpoint_path(path), leaves=False)[0]


def _differences(saved: Any, wanted: Any, where: str = "") -> Iterator[str]:
    """Where two JSON values differ, as ``where: checkpoint X, here Y`` lines."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        # (`wanted` holds only keys the checkpoint recorded: see `_recorded`.)
        for key in saved:
            at = f"{where}.{key}" if where else str(key)
            if key not in wanted:
                yield f"{at}: only in the checkpoint"
            else:
                yield from _differences(saved[key], wanted[key], at)
    elif isinstance(saved, list) and isinstance(wanted, list) and len(saved) == len(wanted):
        for i, (a, b) in enumerate(zip(saved, wanted, strict=True)):
            yield from _differences(a, b, f"{where}[{i}]")
    elif saved != wanted:
        yield f"{where or 'fingerprint'}: checkpoint {_short(saved)}, here {_short(wanted)}"


def _recorded(saved: Any, wanted: Any, where: str = "") -> tuple[Any, list[str]]:
    """``wanted`` without the dictionary keys that ``saved`` lacks at the same place (what a
    newer traxon describes and an older one did not record), and those keys' paths. What
    the checkpoint does record is still compared in full, and its arrays' shapes and dtypes
    are checked apart from the fingerprint."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        kept: dict[str, Any] = {}
        missing: list[str] = []
        for key, value in wanted.items():
            at = f"{where}.{key}" if where else str(key)
            if key in saved:
                kept[key], more = _recorded(saved[key], value, at)
                missing += more
            else:
                missing.append(at)
        return kept, missing
    if isinstance(saved, list) and isinstance(wanted, list) and len(saved) == len(wanted):
        pairs = [
            _recorded(a, b, f"{where}[{i}]")
            for i, (a, b) in enumerate(zip(saved, wanted, strict=True))
        ]
        return [p for p, _ in pairs], [m for _, more in pairs for m in more]
    return wanted, []


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_checkpoint(
    path: str | os.PathLike,
    like: Any,
    fingerprint: Any = None,
    optional: Callable[[str], bool] | None = None,
) -> Any:
    """Read a checkpoint into the structure of ``like``, checking it first.

    Raises ``FileNotFoundError`` if missing and :class:`CheckpointError` (a ``ValueError``)
    if the file is not a traxon checkpoint, is truncated or damaged (its checksum), was
    written for a different network (fingerprint: the message lists what differs), or its
    leaves do not match ``like`` (paths, shapes, dtypes) -- the message names the first
    mismatching leaf. ``path`` may have any extension; ``.npz`` is tried when the path as
    given does not exist. ``optional``: a predicate on a leaf's key (``jax.tree_util.keystr``
    of its path) for leaves that an older checkpoint may lack; they keep ``like``'s value
    (with a :class:`~traxon.TraxonWarning` that names them).

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
        traxon.learn.checkpoint.CheckpointError: ... leaf `['w']` has shape (2,) ...
        >>> folder.cleanup()
    """
    path = checkpoint_path(path)
    meta, arrays = _read(path, leaves=True)
    if fingerprint is not None:
        wanted = json.loads(json.dumps(fingerprint))
        saved = meta.get("fingerprint")
        wanted, unrecorded = _recorded(saved, wanted)
        if unrecorded:
            names = unrecorded[:6] + [f"... {len(unrecorded) - 6} more"] * (len(unrecorded) > 6)
            warn(
                f"checkpoint '{path}' was written by an older traxon that did not record "
                f"{names}; only the rest of its fingerprint is checked. Save it again "
                "to record everything."
            )
        if saved != wanted:
            diffs = list(_differences(saved, wanted))
            shown = "\n  ".join(diffs[:8])
            more = f"\n  ... and {len(diffs) - 8} more" if len(diffs) > 8 else ""
            raise _fail(
                path,
                f"it was written for a different network or learner; what differs:\n"
                f"  {shown}{more}\nRestore into a learner built like the one that saved it.",
            )
    keys, leaves = _flatten(like)
    saved_keys = list(meta["keys"])
    recorded = set(saved_keys)
    absent = [k for k in keys if k not in recorded]
    if absent and optional is not None and all(optional(k) for k in absent):
        warn(
            f"checkpoint '{path}' has no {absent[:4]}{' ...' * (len(absent) > 4)} (written by "
            "an older traxon); they keep their initial values."
        )
        held = dict(zip(saved_keys, arrays, strict=True))
        arrays = [
            held[k] if k in held else np.asarray(v) for k, v in zip(keys, leaves, strict=True)
        ]
        saved_keys = keys
    if keys != saved_keys:
        missing = sorted(set(keys) - set(saved_keys))
        extra = sorted(set(saved_keys) - set(keys))
        raise _fail(
            path,
            f"it does not match the expected state: missing {missing[:5]}, unexpected {extra[:5]}.",
        )
    for key, want, got in zip(keys, leaves, arrays, strict=True):
        if want.shape != got.shape or want.dtype != got.dtype:
            raise _fail(
                path,
                f"leaf `{key}` has shape {got.shape} and dtype {got.dtype}; expected shape "
                f"{want.shape} and dtype {want.dtype}.",
            )
    treedef = jax.tree_util.tree_structure(like)
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in arrays])
