"""Sharded vector spaces: rows and keys round-trip through plain .npy memmaps, readers in other
processes see the same vectors, and `verify` finds a flipped byte."""

import json
import subprocess
import sys

import numpy as np
import pytest

from shardvec.tasks.storage.spaces import Space, SpaceWriter


def _space(tmp_path, n=1000, dim=16, rows_per_shard=128):
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    keys = [f"key-{i}-é" for i in range(n)]
    w = SpaceWriter(tmp_path / "space", dim, rows_per_shard, extra_columns=["text"])
    for start in range(0, n, 97):  # batch size unrelated to the shard size
        w.append(keys[start : start + 97], vecs[start : start + 97], text=[k.upper() for k in keys[start : start + 97]])
    w.close(normalized=False)
    return tmp_path / "space", keys, vecs


def test_rows_keys_and_shards_round_trip(tmp_path):
    path, keys, vecs = _space(tmp_path)
    space = Space(path)
    assert len(space) == 1000 and space.n_shards == 8 and space.dim == 16
    assert [s["rows"] for s in space.manifest["shards"]] == [128] * 7 + [104]
    for i in (0, 127, 128, 999):
        assert space.key(i) == keys[i]
        assert np.array_equal(space.vector_at(i), vecs[i])
        assert space.find(keys[i]) == i
        assert space.column("text", i) == keys[i].upper()
    assert np.array_equal(space.vectors_at([999, 3, 500, 3]), vecs[[999, 3, 500, 3]])
    for one in (0, 127, 128, 999):  # one row has a path of its own
        assert np.array_equal(space.vectors_at([one]), vecs[[one]])
    for outside in ([1000], [-1], [-200], [5, 1000]):  # never another row's vector, nor unset memory
        with pytest.raises(IndexError, match="outside this space's rows 0..999"):
            space.vectors_at(outside)
    for outside in (1000, -1):
        with pytest.raises(IndexError, match="outside this space's rows"):
            space.vector_at(outside)
    assert space.find("absent") is None and "absent" not in space
    with pytest.raises(KeyError):
        space.vector("absent")
    assert list(space.keys()) == keys


def test_every_key_is_found_and_colliding_hashes_are_told_apart(tmp_path, monkeypatch):
    from shardvec.tasks.storage import keys as keys_module

    real = keys_module.xxh3_64_intdigest
    same = {b"key-3-\xc3\xa9", b"key-700-\xc3\xa9", b"key-701-\xc3\xa9", b"not-stored"}
    # Four keys share one hash, at both ends of the hash range (the lookup directory's edges).
    for h in (0, 2**64 - 1):
        monkeypatch.setattr(keys_module, "xxh3_64_intdigest", lambda b, h=h: h if b in same else real(b))
        path, keys, vecs = _space(tmp_path / str(h))
        space = Space(path)
        assert [space.find(k) for k in keys] == list(range(1000))
        assert list(space.find_many(keys + ["not-stored", "absent"])) == list(range(1000)) + [-1, -1]
        assert space.find("not-stored") is None and space.find_all("key-700-é") == [700]
        assert np.array_equal(space.vector("key-701-é"), vecs[701])


def test_shards_are_plain_npy_memmaps(tmp_path):
    path, _, vecs = _space(tmp_path)
    shard = np.load(path / "vectors-00001.npy", mmap_mode="r", allow_pickle=False)
    assert isinstance(shard, np.memmap) and np.array_equal(shard, vecs[128:256])


def test_reader_in_another_process_sees_the_same_vectors(tmp_path):
    path, keys, vecs = _space(tmp_path)
    code = (
        "import json, sys; from shardvec.tasks.storage.spaces import Space; s = Space(sys.argv[1]); "
        "print(json.dumps([s.vector(k).tolist() for k in sys.argv[2:]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), keys[5], keys[700]], capture_output=True, text=True, check=True
    ).stdout
    assert np.array_equal(np.array(json.loads(out), dtype=np.float32), vecs[[5, 700]])


def test_verify_finds_a_flipped_byte(tmp_path):
    path, _, _ = _space(tmp_path)
    assert Space(path).verify() == []
    shard = path / "vectors-00003.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert Space(path).verify() == ["vectors-00003.npy"]


def test_missing_space_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No vector space at"):
        Space(tmp_path)


def _mapped(folder) -> int:
    """This process's mappings of files under `folder`."""
    with open("/proc/self/maps") as maps:
        return sum(str(folder) in line for line in maps)


def test_a_space_let_go_unmaps_its_files_at_once(tmp_path):
    """Nothing a Space holds points back at it: dropped, its files are unmapped there and then,
    not when Python's cycle collector next runs (a Dask worker opens one per task: the pages they
    read stayed resident, and the worker's RSS grew with the corpus, 472 -> 790 MB)."""
    import gc

    folder, keys, _ = _space(tmp_path)
    space = Space(folder)
    space.shard(0), space.vector(keys[3]), space.find(keys[700]), space.column("text", 5)
    assert _mapped(folder)
    gc.disable()
    try:
        del space
        assert _mapped(folder) == 0
    finally:
        gc.enable()
