import pytest

from harmguard.digests import model_digest, sha256_bytes, thresholds_version
from harmguard.storage import LocalStore, LostRace, StoreError


def test_atomic_write_create_only_and_cas(tmp_path):
    store = LocalStore(tmp_path)
    store.write_atomic("a/b.json", b"1")
    store.write_atomic("a/b.json", b"2")
    assert store.read_bytes("a/b.json") == b"2"
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "a").iterdir())
    assert store.create_only("a/c", b"x") is True
    assert store.create_only("a/c", b"y") is False
    assert store.read_bytes("a/c") == b"x"

    data, token = store.read_versioned("ptr.json")
    assert (data, token) == (None, None)
    t1 = store.compare_and_swap("ptr.json", b"v1", None)
    with pytest.raises(LostRace):
        store.compare_and_swap("ptr.json", b"v2", None)  # someone already created it
    t2 = store.compare_and_swap("ptr.json", b"v2", t1)
    with pytest.raises(LostRace):
        store.compare_and_swap("ptr.json", b"v3", t1)  # stale token
    assert store.read_versioned("ptr.json") == (b"v2", t2)


def test_put_tree_create_only(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.json").write_text("{}")
    (src / "sub" / "w.npy").write_bytes(b"abc")
    store = LocalStore(tmp_path / "home")
    assert store.put_tree_create_only(src, "models/d1") is True
    (src / "model.json").write_text('{"changed": 1}')
    assert store.put_tree_create_only(src, "models/d1") is False  # never rewritten
    assert (tmp_path / "home" / "models" / "d1" / "model.json").read_text() == "{}"
    assert store.list("models") == ["models/d1/model.json", "models/d1/sub/w.npy"]


def test_keys_cannot_escape(tmp_path):
    with pytest.raises(StoreError, match="escapes"):
        LocalStore(tmp_path / "home").write_atomic("../outside", b"x")


def test_model_digest_definition(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.json").write_bytes(b"A")
    (tmp_path / "b" / "c.npy").write_bytes(b"C")
    expected = sha256_bytes(f"a.json\t{sha256_bytes(b'A')}\nb/c.npy\t{sha256_bytes(b'C')}\n".encode())
    assert model_digest(tmp_path) == expected
    assert thresholds_version({"a": 0.5, "b": 1}) == thresholds_version({"b": 1.0, "a": 0.5})


@pytest.fixture
def synced(monkeypatch):
    """The real paths os.fsync was called on (fds resolved through /proc/self/fd, Linux)."""
    import os
    from pathlib import Path

    paths = []
    real_fsync = os.fsync

    def spy(fd):
        paths.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return paths


def test_the_folder_is_fsynced_after_every_rename_or_link(tmp_path, synced):
    store = LocalStore(tmp_path / "home")
    folder = (tmp_path / "home" / "registry" / "p").resolve()
    store.compare_and_swap("registry/p/champion.json", b"v1", None)
    assert synced[-1] == folder  # after the pointer's rename, its folder
    synced.clear()
    store.write_atomic("registry/p/champion.json", b"v2")
    assert synced[-1] == folder
    synced.clear()
    store.create_only("registry/p/audit/chain/000000000001.json", b"{}")
    assert synced[-1] == folder / "audit" / "chain"
    assert {folder / "audit", folder} <= set(synced)  # the new folders' names, in their parents
    synced.clear()
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.npy").write_bytes(b"abc")
    store.put_tree_create_only(src, "models/d1")
    assert synced[-1] == (tmp_path / "home" / "models").resolve()
    assert any(p.name == "w.npy" for p in synced)  # the tree's data before the rename publishes it
