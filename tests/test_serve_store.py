"""The enrollment store under concurrency: writers in several processes, a reader in a loop, a crash mid-write.

Fake embeddings (seeded normal vectors) keep it fast: the store does not care where vectors come from.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from voiceid.serve.gallery import load_gallery
from voiceid.serve.store import DATA_FILE, INDEX_FILE, EnrollmentError, EnrollmentStore, StoreState

EMBEDDER = "fake:v1"
DIM = 48
N_WRITERS = 3
ROUNDS = 6


class Op(NamedTuple):
    kind: str  # "add" | "remove"
    name: str
    seed: tuple[int, ...] = ()
    n: int = 0
    append: bool = False


def script(w: int) -> list[Op]:
    """Writer ``w``'s operations on its own speakers: enroll, re-enroll (replace), append, remove, re-add."""
    names = [f"w{w}-s{k}" for k in range(3)]
    ops = [Op("add", n, (w, 0, k), 3) for k, n in enumerate(names)]
    for r in range(1, ROUNDS):
        ops += [
            Op("add", names[r % 3], (w, r, 0), 2 + r % 3),  # re-enroll: replaces the recordings
            Op("add", names[(r + 1) % 3], (w, r, 1), 1, append=True),  # append one recording
            Op("remove", names[(r + 2) % 3]),
            Op("add", names[(r + 2) % 3], (w, r, 2), 3),  # back again
        ]
    return ops


def _files(op: Op) -> list[dict[str, Any]]:
    return [{"path": f"/fake/{op.name}/{'-'.join(map(str, op.seed))}-{i}.wav", "content_hash": _hash(op.seed, i), "duration": 1.0}
            for i in range(op.n)]


def _hash(seed: tuple[int, ...], i: int) -> str:
    return hashlib.sha256(repr((seed, i)).encode()).hexdigest()


def _vectors(op: Op) -> np.ndarray:
    return np.random.default_rng(list(op.seed)).normal(size=(op.n, DIM))


def apply(store: EnrollmentStore, op: Op) -> None:
    if op.kind == "add":
        store.add(op.name, _vectors(op), _files(op), EMBEDDER, {"uri": "fake"}, append=op.append)
    else:
        store.remove(op.name)


def snapshots(w: int) -> set[tuple[Any, ...]]:
    """Every state writer ``w``'s speakers pass through (applied alone, in order): what a reader may see of them."""
    speakers: dict[str, tuple[str, ...]] = {}
    seen = {_signature(speakers)}
    for op in script(w):
        if op.kind == "remove":
            del speakers[op.name]
        else:
            hashes = tuple(f["content_hash"] for f in _files(op))
            speakers[op.name] = (speakers.get(op.name, ()) if op.append else ()) + hashes
        seen.add(_signature(speakers))
    return seen


def _signature(speakers: dict[str, tuple[str, ...]]) -> tuple[Any, ...]:
    return tuple(sorted(speakers.items()))


def _vector_of() -> dict[str, np.ndarray]:
    """Content hash -> the embedding stored for it."""
    out: dict[str, np.ndarray] = {}
    for w in range(N_WRITERS):
        for op in script(w):
            if op.kind == "add":
                out.update({f["content_hash"]: v for f, v in zip(_files(op), _vectors(op))})
    return out


def check_state(state: StoreState, valid: list[set[tuple[Any, ...]]], vector_of: dict[str, np.ndarray]) -> None:
    """A whole version: each writer's speakers as after some prefix of its script, vectors matching their files."""
    assert sorted(state.utt_names) == sorted(n for n, e in state.speakers.items() for _ in range(e["n_utterances"]))
    for w, allowed in enumerate(valid):
        mine = {n: tuple(f["content_hash"] for f in e["files"]) for n, e in state.speakers.items() if n.startswith(f"w{w}-")}
        assert _signature(mine) in allowed, f"writer {w}: a state no prefix of its script produces: {mine}"
    for name, entry in state.speakers.items():
        rows = state.utt_vectors[[i for i, n in enumerate(state.utt_names) if n == name]]
        expected = np.stack([vector_of[f["content_hash"]] for f in entry["files"]])
        assert np.allclose(rows, expected), name


def writer(root: str, w: int, start: Any) -> None:
    start.wait()
    store = EnrollmentStore(root)
    for op in script(w):
        apply(store, op)


def reader(root: str, start: Any, stop: Any, out: Any) -> None:
    """Load the store (as ``voiceid identify`` does) and the npz as a gallery (as the served model does) until told to stop."""
    store = EnrollmentStore(root)
    valid = [snapshots(w) for w in range(N_WRITERS)]
    vector_of = _vector_of()
    errors: list[str] = []
    versions: list[int] = []
    start.wait()
    while not stop.is_set() and len(errors) < 5:
        try:
            state = store.load()
            gallery = store.gallery(EMBEDDER, state)
            assert gallery is None or sorted(gallery.speakers) == sorted(state.speakers)
            check_state(state, valid, vector_of)
            if store.data_path.exists():
                served = load_gallery(store.data_path, EMBEDDER)
                assert np.allclose(np.linalg.norm(served.vectors, axis=1), 1.0)
            if versions and state.version < versions[-1]:
                errors.append(f"version went back from {versions[-1]} to {state.version}")
            versions.append(state.version)
        except Exception as exc:  # any failure to read a whole version is what this test is about
            errors.append(f"{type(exc).__name__}: {exc}")
    out.put((errors, len(versions), len(set(versions))))


def test_concurrent_writers_and_a_reader_match_the_serial_result(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")  # the children need nothing but this module's functions
    root = str(tmp_path / "store")
    start, stop, out = ctx.Barrier(N_WRITERS + 1), ctx.Event(), ctx.Queue()
    read = ctx.Process(target=reader, args=(root, start, stop, out))
    writers = [ctx.Process(target=writer, args=(root, w, start)) for w in range(N_WRITERS)]
    read.start()
    for p in writers:
        p.start()
    t0 = time.monotonic()
    for p in writers:
        p.join(timeout=60)
    elapsed = time.monotonic() - t0
    time.sleep(0.05)
    stop.set()
    read.join(timeout=30)
    assert read.exitcode == 0, "the reader crashed (see its traceback above)"
    errors, reads, versions = out.get(timeout=5)
    assert [p.exitcode for p in writers] == [0] * N_WRITERS, "a writer failed (see its traceback above)"
    assert errors == [], errors
    assert reads > 20 and versions > 3, f"the reader saw only {versions} versions in {reads} loads ({elapsed:.1f} s)"

    concurrent = EnrollmentStore(root).load()
    serial_store = EnrollmentStore(tmp_path / "serial")
    for w in range(N_WRITERS):
        for op in script(w):
            apply(serial_store, op)
    serial = serial_store.load()
    n_ops = sum(len(script(w)) for w in range(N_WRITERS))
    assert concurrent.version == serial.version == n_ops  # no change lost, none applied twice
    strip = {"created", "updated"}
    assert {n: {k: v for k, v in e.items() if k not in strip} for n, e in concurrent.speakers.items()} == \
        {n: {k: v for k, v in e.items() if k not in strip} for n, e in serial.speakers.items()}
    check_state(concurrent, [snapshots(w) for w in range(N_WRITERS)], _vector_of())
    got, want = load_gallery(Path(root) / DATA_FILE, EMBEDDER), serial_store.gallery(EMBEDDER)
    assert want is not None and got.speakers == want.speakers and np.allclose(got.vectors, want.vectors)
    assert sorted(got.speakers) == sorted(f"w{w}-s{k}" for w in range(N_WRITERS) for k in range(3))


def test_a_crash_mid_write_leaves_the_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EnrollmentStore(tmp_path / "store")
    first, second = script(0)[:2]
    apply(store, first)
    before = store.load()

    def crash(*_: Any, **__: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)  # the one write that commits a change
    with pytest.raises(OSError, match="disk full"):
        apply(store, second)
    monkeypatch.undo()
    after = store.load()
    assert after.version == before.version and sorted(after.speakers) == [first.name]
    assert not list(store.root.glob(".*.tmp"))
    apply(store, second)  # the lock was released
    assert store.load().version == before.version + 1


def test_a_reader_racing_the_first_save_sees_it_and_a_lone_index_is_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first save lands between a reader's two looks (no store.npz, then index.json): not damage."""
    store = EnrollmentStore(tmp_path / "store")
    first = script(0)[0]
    apply(store, first)
    real_exists = Path.exists
    looks: list[Path] = []

    def first_look_misses_the_data(path: Path) -> bool:
        looks.append(path)
        if path == store.data_path and looks.count(path) == 1:
            return False  # looked just before the writer's atomic replace
        return real_exists(path)

    monkeypatch.setattr(Path, "exists", first_look_misses_the_data)
    state = store.load()
    monkeypatch.undo()
    assert sorted(state.speakers) == [first.name] and state.version == 1
    store.data_path.unlink()  # index.json left alone, store.npz gone: that is damage
    with pytest.raises(EnrollmentError, match="index.json without store.npz: the store is damaged"):
        store.load()


def test_the_readable_index_copy_is_never_read_and_a_format1_store_migrates(tmp_path: Path) -> None:
    store = EnrollmentStore(tmp_path / "store")
    first, second = script(0)[:2]
    apply(store, first)
    copy = json.loads(store.index_path.read_text())
    assert copy["version"] == 1 and list(copy["speakers"]) == [first.name]
    store.index_path.write_text(json.dumps({**copy, "version": 7}))  # stale or tampered: irrelevant
    assert store.load().version == 1
    store.index_path.unlink()
    assert store.load().version == 1 and store.exists()

    # A format-1 store: index.json is the index, the npz has no "index" member.
    legacy = EnrollmentStore(tmp_path / "legacy")
    apply(legacy, first)
    with np.load(legacy.data_path) as data:
        arrays = {k: data[k] for k in data.files if k != "index"}
    np.savez(legacy.data_path, **arrays)
    index = {k: v for k, v in copy.items() if k != "note"} | {"format": 1}
    (legacy.root / INDEX_FILE).write_text(json.dumps(index))
    assert sorted(legacy.load().speakers) == [first.name]
    (legacy.root / INDEX_FILE).write_text(json.dumps({**index, "version": 2}))
    with pytest.raises(EnrollmentError, match="interrupted write of a format-1 store"):
        legacy.load()
    (legacy.root / INDEX_FILE).write_text(json.dumps(index))
    apply(legacy, second)  # migrates: the index moves into the npz
    with np.load(legacy.data_path) as data:
        assert "index" in data.files
    assert legacy.load().version == 2
