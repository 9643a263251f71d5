"""Bad input to the core, checkpoints, connectome tables and SHD files: a clear error (or
warning) naming the argument, before any work."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import traxon
from tests.helpers import rewrite_checkpoint_header
from traxon.connectome import Connectome, load_edges
from traxon.core import (
    ALIF,
    LIF,
    Dense,
    Expon,
    LeakyIntegrator,
    Network,
    Population,
    Projection,
    Readout,
)
from traxon.tasks import SpikingHeidelbergDigits, write_shd_file

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
    with pytest.raises(TypeError, match="`tau` must be a number"):
        LeakyIntegrator(tau=value)
    with pytest.raises(TypeError, match="`beta` must be a number"):
        ALIF(beta=value)


@pytest.mark.parametrize("value", ["5", ["5", "6"], b"5"])
def test_non_numeric_synapse_and_op_parameters_name_them(value):
    # Synapses and reversal potentials go through the same conversion as the neurons.
    with pytest.raises(TypeError, match="`tau` must be a number"):
        Expon(tau=value)
    with pytest.raises(TypeError, match="`reversal` must be a number"):
        Projection("x", "h", reversal=value)


def test_per_neuron_parameter_of_wrong_length_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"4 LIF neurons has `neuron.tau` of shape \(5,\)"):
        Population(LIF(tau=np.full(5, 10.0)), 4)
    Population(LIF(tau=np.full(4, 10.0)), 4)  # one per neuron: fine
    pop = Population(LIF(tau=np.full(4, 10.0)), 4)
    object.__setattr__(pop, "size", 5)  # past the Population's own check
    with pytest.raises(ValueError, match="population `h` of 5 LIF neurons"):
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


# -------------------------------------------------------------------------------------
# Checkpoints.


def tiny_network(tau=10.0):
    return Network(
        3,
        {"h": Population(LIF(tau=tau), 4)},
        [Projection("x", "h", Dense(3.0))],
        readout=Readout("h", 2),
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A d_rtrl and an es_d_rtrl checkpoint of a tau = 10 network (batch 2)."""
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for algorithm in ("d_rtrl", "es_d_rtrl"):
        learner = traxon.online_learner(tiny_network(10.0), algorithm)
        learner.init_state(2)
        paths[algorithm] = Path(learner.save(folder / f"{algorithm}.npz"))
    return paths


@pytest.mark.parametrize("algorithm", ["d_rtrl", "es_d_rtrl"])
def test_checkpoint_of_other_neuron_parameters_is_refused_saying_what_differs(saved, algorithm):
    other = traxon.online_learner(tiny_network(30.0), algorithm)
    with pytest.raises(traxon.CheckpointError, match=r"neuron\.tau: checkpoint 10\.0, here 30\.0"):
        other.restore(saved[algorithm])
    same = traxon.online_learner(tiny_network(10.0), algorithm)
    same.restore(saved[algorithm])  # the same network restores


def restore_error(path):
    learner = traxon.online_learner(tiny_network(), "d_rtrl")
    with pytest.raises(traxon.CheckpointError) as info:
        learner.restore(path)
    message = str(info.value)
    assert str(path) in message
    assert "pickle" not in message
    return message


def test_non_checkpoint_empty_and_truncated_files_raise_checkpoint_error(saved, tmp_path):
    data = saved["d_rtrl"].read_bytes()
    cases = {
        "text.npz": (b"not a checkpoint", "not a NumPy .npz archive"),
        "empty.npz": (b"", "empty"),
        "half.npz": (data[: len(data) // 2], "truncated or damaged"),
        "head.npz": (data[:200], "truncated or damaged"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert reason in restore_error(tmp_path / name)
    np.savez(tmp_path / "plain.npz", a=np.ones(3))  # a NumPy archive of another program
    assert "not a traxon checkpoint" in restore_error(tmp_path / "plain.npz")
    assert issubclass(traxon.CheckpointError, ValueError)


def test_bit_flips_are_detected(saved, tmp_path):
    data = bytearray(saved["d_rtrl"].read_bytes())
    rng = np.random.default_rng(0)
    restored = 0
    for k in rng.choice(len(data), 40, replace=False):
        flipped = bytearray(data)
        flipped[k] ^= 1 << int(rng.integers(8))
        path = tmp_path / "flip.npz"
        path.write_bytes(bytes(flipped))
        learner = traxon.online_learner(tiny_network(), "d_rtrl")
        try:
            learner.restore(path)
        except traxon.CheckpointError as err:
            assert str(path) in str(err)
            continue
        restored += 1  # a flip in zip bookkeeping the contents do not depend on
        like = traxon.online_learner(tiny_network(), "d_rtrl")
        like.restore(saved["d_rtrl"])
        assert all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree_util.tree_leaves(learner.state),
                jax.tree_util.tree_leaves(like.state),
                strict=True,
            )
        )
    assert restored < 20


def test_checksum_catches_a_changed_leaf_in_a_sound_archive(saved, tmp_path):
    with np.load(saved["d_rtrl"]) as data:
        entries = {k: np.array(data[k]) for k in data.files}
    entries["leaf0"] = entries["leaf0"] + 1  # a sound zip (its CRCs match), other numbers
    np.savez(tmp_path / "edited.npz", **entries)
    assert "checksum" in restore_error(tmp_path / "edited.npz")


def test_checkpoint_under_another_extension_restores(saved, tmp_path):
    path = tmp_path / "run.ckpt"
    path.write_bytes(saved["d_rtrl"].read_bytes())
    learner = traxon.online_learner(tiny_network(), "d_rtrl")
    learner.restore(path)  # the batch size is read from the file
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        learner.restore(tmp_path / "missing.ckpt")
    (tmp_path / "run").mkdir()  # a folder beside the file that save("run") wrote
    (tmp_path / "run.npz").write_bytes(saved["d_rtrl"].read_bytes())
    learner.restore(tmp_path / "run")


def test_saving_where_a_file_is_in_the_way_says_so(tmp_path):
    (tmp_path / "notes").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"'.*notes' is a file, not a folder"):
        traxon.save_checkpoint(tmp_path / "notes" / "ckpt.npz", {"w": np.ones(2)})
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        traxon.save_checkpoint(tmp_path / "folder.npz", {"w": np.ones(2)})
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(NotADirectoryError, match=r"'.*link' is a broken symbolic link"):
        traxon.save_checkpoint(tmp_path / "link" / "ckpt.npz", {"w": np.ones(2)})


def test_saving_in_an_unwritable_folder_says_so(tmp_path, monkeypatch):
    real_open = os.open

    def refuse(path, flags, mode=0o777, **kwargs):
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", refuse)  # root ignores folder permissions: simulate
    with pytest.raises(PermissionError, match=r"cannot write in the folder .*: Permission denied"):
        traxon.save_checkpoint(tmp_path / "ckpt.npz", {"w": np.ones(2)})


def test_stale_temporary_files_of_killed_writers_are_removed(tmp_path):
    from traxon.learn.checkpoint import _host_tag

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a writer killed mid-save: its process is gone
    host = _host_tag()
    dead = tmp_path / f".ckpt.npz.{host}-{gone.pid}-abcdefgh.tmp"
    just_now = tmp_path / f".ckpt.npz.{host}-{gone.pid}-ijklmnop.tmp"  # touched a moment ago
    alive = tmp_path / f".other.npz.{host}-{os.getpid()}-abcdefgh.tmp"  # a save under way
    remote_old = tmp_path / ".ckpt.npz.0123abcd-1-abcdefgh.tmp"  # another host, long ago
    remote_new = tmp_path / ".ckpt.npz.0123abcd-2-abcdefgh.tmp"
    unrelated = tmp_path / ".notes.tmp"
    for p in (dead, just_now, alive, remote_old, remote_new, unrelated):
        p.write_bytes(b"partial")
    minutes_ago = time.time() - 300
    for p in (dead, alive, remote_new):
        os.utime(p, (minutes_ago, minutes_ago))
    os.utime(remote_old, (0, 0))
    traxon.save_checkpoint(tmp_path / "ckpt.npz", {"w": np.ones(2)})
    left = sorted(p.name for p in tmp_path.iterdir())
    kept = [just_now.name, alive.name, remote_new.name, unrelated.name]
    assert left == sorted(["ckpt.npz", *kept])


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = traxon.save_checkpoint(tmp_path / "ckpt.npz", {"w": np.ones(2)})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_checkpoint_of_format_1_still_loads(tmp_path):
    meta = {"format": 1, "keys": ["['w']"], "shapes": [[2]], "dtypes": ["float64"]}
    meta["fingerprint"] = None
    header = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", leaf0=np.arange(2.0), __traxon_meta__=header)
    out = traxon.load_checkpoint(tmp_path / "old.npz", {"w": np.zeros(2)})
    assert np.asarray(out["w"]).tolist() == [0.0, 1.0]


# -------------------------------------------------------------------------------------
# Connectome tables.


def write_table(folder, name, text, encoding="utf-8"):
    path = folder / name
    path.write_text(text, encoding=encoding)
    return path


def test_min_count_without_a_count_column_is_refused(tmp_path):
    path = write_table(tmp_path, "edges.csv", "pre_root_id,post_root_id\n1,2\n2,3\n")
    with pytest.raises(ValueError, match=r"`min_count=5` needs a synapse count column"):
        load_edges(path, min_count=5)
    assert load_edges(path).n_connections == 2  # without min_count every row is kept


def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    text = "pre_root_id,post_root_id,syn_count\n1,2,5\n2,1,7\n"
    path = write_table(tmp_path, "edges.csv", text, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    c = load_edges(path)
    assert c.n_connections == 2 and c.count.tolist() == [5.0, 7.0]


def test_ids_beyond_int64_are_kept_exactly(tmp_path):
    big = 2**64 - 1
    text = f"pre_root_id,post_root_id,syn_count\n{big},2,5\n2,{big - 1},6\n"
    c = load_edges(write_table(tmp_path, "edges.csv", text))
    assert c.ids.tolist() == [2, big - 1, big]
    assert c.ids.dtype == np.uint64
    # A mix of int64 and uint64 arrays never goes through float64.
    c = Connectome.from_edges(np.array([big], np.uint64), np.array([3]))
    assert c.ids.tolist() == [3, big]


def test_ids_beyond_64_bits_name_the_column(tmp_path):
    text = f"pre_root_id,post_root_id,syn_count\n1,{2**64},5\n"
    with pytest.raises(
        ValueError, match=r"column 'post_root_id' holds neuron id 18446744073709551616"
    ):
        load_edges(write_table(tmp_path, "a.csv", text))
    text = f"pre_root_id,post_root_id,syn_count\n{2**64 - 1},-2,5\n"
    with pytest.raises(ValueError, match="column 'post_root_id' holds negative neuron ids"):
        load_edges(write_table(tmp_path, "b.csv", text))


# -------------------------------------------------------------------------------------
# SHD files.


def test_unreadable_shd_files_name_the_file_and_the_reason(tmp_path):
    pytest.importorskip("h5py")
    good = write_shd_file(tmp_path / "good.h5", [[0.1, 0.5]] * 20, [[0, 3]] * 20, [0] * 20)
    data = good.read_bytes()
    cases = {
        "text.h5": (b"hello, not HDF5", "not an HDF5 file"),
        "empty.h5": (b"", "it is empty"),
        "cut.h5": (data[: len(data) // 2], "truncated or damaged"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=reason) as info:
            SpikingHeidelbergDigits(path, n_channels=4, n_steps=10)
        assert str(path) in str(info.value) and "spikes/times" in str(info.value)
    SpikingHeidelbergDigits(good, n_channels=4, n_steps=10)  # the intact file loads


def test_learner_checkpoint_of_format_1_restores_with_a_warning(saved, tmp_path):
    def as_format_1(meta):  # as an older traxon wrote it: no checksum, no network description
        meta["format"] = 1
        del meta["checksum"], meta["fingerprint"]["network"]

    rewrite_checkpoint_header(saved["d_rtrl"], as_format_1, tmp_path / "old.npz")
    learner = traxon.online_learner(tiny_network(), "d_rtrl")
    with pytest.warns(
        traxon.TraxonWarning, match=r"older traxon that did not record \['network'\]"
    ):
        learner.restore(tmp_path / "old.npz")
    other = traxon.online_learner(tiny_network(), "es_d_rtrl")  # what it recorded is checked
    with (
        pytest.warns(traxon.TraxonWarning),
        pytest.raises(traxon.CheckpointError, match="algorithm"),
    ):
        other.restore(tmp_path / "old.npz")


def test_a_failed_write_names_the_checkpoint(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError, match=r"cannot save checkpoint '.*ckpt.npz'.*No space left"):
        traxon.save_checkpoint(tmp_path / "ckpt.npz", {"w": np.ones(2)})
    assert os.listdir(tmp_path) == []
