"""The enrollment store: validation, min count, add/update/remove, versions, model identity, gallery format."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import synth_voice, write_wav

from voiceid.serve.enroll import EnrollParams, enroll_speaker, usable_recordings
from voiceid.serve.gallery import load_gallery
from voiceid.serve.store import EnrollmentError, EnrollmentStore, check_name


class FakeChampion:
    """What enrollment needs of a champion: ``embed``, ``embedding.embedder_id``, ``sample_rate``."""

    def __init__(self, embedder_id: str = "fake:v1", bands: int = 16) -> None:
        self.embedding = SimpleNamespace(embedder_id=embedder_id)
        self.sample_rate = 16000
        self.family = "fake"
        self.label_map: list[str] = []
        self.bands = bands

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        spec = np.abs(np.fft.rfft(wave[:16000], n=16000))  # (8001,)
        return np.log1p(np.array([b.sum() for b in np.array_split(spec, self.bands)]))  # (bands,)


@pytest.fixture
def voices(tmp_path: Path) -> dict[str, list[Path]]:
    """Two speakers x 4 recordings, plus a silent, a short and an unreadable file."""
    out = {s: [write_wav(tmp_path / s / f"{i}.wav", synth_voice(seed=seed, seconds=1.0 + 0.1 * i)) for i in range(4)]
           for s, seed in (("ann", 3), ("bob", 9))}
    out["bad"] = [
        write_wav(tmp_path / "bad" / "silent.wav", np.zeros(16000, np.float32)),
        write_wav(tmp_path / "bad" / "short.wav", synth_voice(seed=3, seconds=0.2)),
    ]
    (tmp_path / "bad" / "text.wav").write_text("not audio")
    out["bad"].append(tmp_path / "bad" / "text.wav")
    return out


def test_enroll_list_update_remove_with_versions(tmp_path: Path, voices: dict[str, list[Path]]) -> None:
    store, champ = EnrollmentStore(tmp_path / "store"), FakeChampion()
    assert not store.exists() and store.speakers() == [] and store.gallery("fake:v1") is None

    info, skipped = enroll_speaker(store, champ, "ann", voices["ann"][:3], EnrollParams(), {"uri": "m", "version": "2"})
    assert (info.name, info.n_utterances, skipped) == ("ann", 3, [])
    enroll_speaker(store, champ, " bob ", voices["bob"], EnrollParams())  # names are stripped
    index = json.loads(store.index_path.read_text())
    assert index["version"] == 2 and index["embedder_id"] == "fake:v1" and sorted(index["speakers"]) == ["ann", "bob"]
    assert index["speakers"]["bob"]["n_utterances"] == 4
    assert [s.name for s in store.speakers()] == ["ann", "bob"]

    # The npz is a gallery the served model reads as is; centroids are unit means of the embeddings.
    gallery = load_gallery(store.data_path, "fake:v1")
    assert gallery.speakers == ["ann", "bob"]
    emb = np.stack([champ.embed(synth_voice(seed=3, seconds=1.0 + 0.1 * i), 16000) for i in range(3)])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    expected = unit.mean(0) / np.linalg.norm(unit.mean(0))
    assert np.allclose(gallery.vectors[0], expected, atol=1e-4)  # 16-bit wav rounding
    assert np.allclose(store.gallery("fake:v1").vectors, gallery.vectors)

    created = store.speakers()[0].created
    enroll_speaker(store, champ, "ann", voices["ann"][3:], EnrollParams(min_files=1), append=True)
    ann = store.speakers()[0]
    assert ann.n_utterances == 4 and ann.created == created and store.load().version == 3
    with pytest.raises(EnrollmentError, match="already enrolled"):
        enroll_speaker(store, champ, "ann", voices["ann"][3:], EnrollParams(min_files=1), append=True)
    enroll_speaker(store, champ, "ann", voices["ann"][1:4], EnrollParams())  # update replaces
    assert store.speakers()[0].n_utterances == 3 and len(store.load().utt_names) == 7

    store.remove("ann")
    assert [s.name for s in store.speakers()] == ["bob"] and store.load().version == 5
    assert load_gallery(store.data_path).speakers == ["bob"]
    with pytest.raises(EnrollmentError, match=r"no enrolled speaker 'ann' \(enrolled: bob\)"):
        store.remove("ann")
    store.remove("bob")
    assert store.gallery("fake:v1") is None and store.load().version == 6


def test_unusable_recordings_are_named_and_too_few_refused(tmp_path: Path, voices: dict[str, list[Path]]) -> None:
    store = EnrollmentStore(tmp_path / "store")
    files = [*voices["ann"][:2], *voices["bad"], voices["ann"][0]]  # 2 usable, 3 unusable, 1 duplicate
    got = usable_recordings(files, EnrollParams(), 16000)
    assert [p for p, _, _ in got.clips] == [str(p) for p in voices["ann"][:2]]
    reasons = "\n".join(got.problems)
    for fragment in ("silent.wav: silent", "short.wav: too_short", "text.wav: unreadable", "0.wav: duplicate"):
        assert fragment in reasons
    with pytest.raises(EnrollmentError, match="2 usable recording\\(s\\), need at least 3") as exc:
        enroll_speaker(store, FakeChampion(), "ann", files, EnrollParams())
    assert "silent.wav" in str(exc.value) and "text.wav" in str(exc.value)
    assert not store.exists()  # nothing written on refusal

    info, skipped = enroll_speaker(store, FakeChampion(), "ann", files, EnrollParams(min_files=2))
    assert info.n_utterances == 2 and len(skipped) == 4  # usable ones enrolled, the others reported


def test_embeddings_of_another_model_are_refused(tmp_path: Path, voices: dict[str, list[Path]]) -> None:
    store = EnrollmentStore(tmp_path / "store")
    model = {"uri": "models:/voiceid@champion", "version": "1"}
    enroll_speaker(store, FakeChampion("fake:v1"), "ann", voices["ann"], EnrollParams(), model)
    made_by = r"enrolled with embedding model 'fake:v1' \(models:/voiceid@champion v1\).*cannot be mixed"
    with pytest.raises(EnrollmentError, match=made_by):
        enroll_speaker(store, FakeChampion("fake:v2"), "bob", voices["bob"], EnrollParams())
    with pytest.raises(EnrollmentError, match="cannot be mixed"):
        store.gallery("fake:v2")
    with pytest.raises(EnrollmentError, match="no embedding model"):
        store.gallery(None)
    store.remove("ann")  # an emptied store adopts the next model
    enroll_speaker(store, FakeChampion("fake:v2"), "bob", voices["bob"], EnrollParams())
    assert store.load().embedder_id == "fake:v2"
    no_embedding = FakeChampion()
    no_embedding.embedding = None
    with pytest.raises(EnrollmentError, match="no embedding model"):
        enroll_speaker(store, no_embedding, "cy", voices["ann"], EnrollParams())


def test_names_and_a_damaged_store(tmp_path: Path, voices: dict[str, list[Path]]) -> None:
    for bad, why in (("", "empty"), ("Unknown", "reserved"), ("a\nb", "printable"), ("x" * 101, "printable")):
        with pytest.raises(EnrollmentError, match=why):
            check_name(bad)
    store = EnrollmentStore(tmp_path / "store")
    enroll_speaker(store, FakeChampion(), "ann", voices["ann"], EnrollParams())
    store.data_path.write_bytes(b"garbage")
    with pytest.raises(EnrollmentError, match="not readable"):
        store.speakers()


def test_a_truncated_store_file_is_reported(tmp_path: Path, voices: dict[str, list[Path]]) -> None:
    store = EnrollmentStore(tmp_path / "store")
    enroll_speaker(store, FakeChampion(), "ann", voices["ann"], EnrollParams())
    whole = store.data_path.read_bytes()
    store.data_path.write_bytes(whole[: len(whole) // 2])  # torn by something other than voiceid (a copy, a disk)
    with pytest.raises(EnrollmentError, match="not readable"):
        store.load()


class DiskFull(OSError):
    """The injected write failure."""


def _savez_dies_half_way(f, **arrays) -> None:
    """np.savez that writes the first half of the real file, then fails."""
    buf = io.BytesIO()
    REAL_SAVEZ(buf, **arrays)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    raise DiskFull("injected: disk full half-way through store.npz")


def _replace_fails(src, dst) -> None:
    raise DiskFull("injected: rename failed")


REAL_SAVEZ = np.savez


@pytest.mark.parametrize("fault", ["npz_write", "rename"])
@pytest.mark.parametrize("change", ["enroll", "remove"])
def test_a_failed_write_leaves_the_previous_store(
    tmp_path: Path, voices: dict[str, list[Path]], monkeypatch: pytest.MonkeyPatch, fault: str, change: str
) -> None:
    import voiceid.atomic

    store, champ = EnrollmentStore(tmp_path / "store"), FakeChampion()
    enroll_speaker(store, champ, "ann", voices["ann"], EnrollParams())
    enroll_speaker(store, champ, "bob", voices["bob"][:3], EnrollParams())
    before, before_bytes = store.load(), store.data_path.read_bytes()
    before_gallery = store.gallery("fake:v1")
    assert before.version == 2

    if fault == "npz_write":
        monkeypatch.setattr(np, "savez", _savez_dies_half_way)
    else:
        monkeypatch.setattr(voiceid.atomic.os, "replace", _replace_fails)
    with pytest.raises(DiskFull):
        if change == "enroll":
            enroll_speaker(store, champ, "bob", voices["bob"], EnrollParams())  # re-enroll with 4 files
        else:
            store.remove("ann")
    monkeypatch.undo()

    # The old store, byte for byte, still loads: same version, speakers, utterances and centroids.
    assert store.data_path.read_bytes() == before_bytes
    after = store.load()
    assert after.version == before.version == 2 and after.speakers == before.speakers
    assert [s.name for s in store.speakers()] == ["ann", "bob"] and store.speakers()[1].n_utterances == 3
    np.testing.assert_array_equal(after.utt_vectors, before.utt_vectors)
    assert load_gallery(store.data_path, "fake:v1").speakers == ["ann", "bob"]
    np.testing.assert_array_equal(store.gallery("fake:v1").vectors, before_gallery.vectors)
    assert not list(store.root.glob("*.tmp")) and not list(store.root.glob(".*.tmp"))  # no temporary left behind

    # ... and the next write succeeds on top of it.
    enroll_speaker(store, champ, "bob", voices["bob"], EnrollParams())
    assert store.load().version == 3 and store.speakers()[1].n_utterances == 4


def test_a_failed_index_copy_write_keeps_the_committed_change(
    tmp_path: Path, voices: dict[str, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """store.npz is the commit point; index.json is a readable copy whose failed write only warns."""
    import voiceid.serve.store as store_module

    store, champ = EnrollmentStore(tmp_path / "store"), FakeChampion()
    enroll_speaker(store, champ, "ann", voices["ann"], EnrollParams())
    old_copy = store.index_path.read_text()
    real = store_module.atomic_write

    def index_write_dies(path, write, **kw):
        if Path(path).name != store.index_path.name:
            return real(path, write, **kw)
        return real(path, lambda f: (f.write('{"half'), _raise(DiskFull("injected: index.json"))), **kw)

    monkeypatch.setattr(store_module, "atomic_write", index_write_dies)
    with pytest.warns(UserWarning, match="readable copy not updated"):
        enroll_speaker(store, champ, "bob", voices["bob"], EnrollParams())
    monkeypatch.undo()
    assert store.load().version == 2 and [s.name for s in store.speakers()] == ["ann", "bob"]
    assert store.index_path.read_text() == old_copy  # the stale copy, whole, not half a file
    assert not list(store.root.glob(".*.tmp"))


def _raise(exc: BaseException) -> None:
    raise exc
