"""Rebuild data/default/ — the embedded default dataset — from ../shared/data/librispeech_excerpts.

Keeps every multi-utterance speaker (the enrollable ones) and every 4th single-utterance
speaker (sorted by id) as unknown-speaker material, re-encoded losslessly to 16-bit FLAC.
Run once by a maintainer; the result is committed with its attribution.

    python scripts/embed_default_dataset.py [--source ../shared/data/librispeech_excerpts]
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import soundfile as sf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/librispeech_excerpts")
    parser.add_argument("--dest", default="data/default")
    parser.add_argument("--single-every", type=int, default=4)
    args = parser.parse_args(argv)
    src, dest = Path(args.source), Path(args.dest)
    rows = list(csv.DictReader((src / "metadata.csv").open()))
    singles = sorted({r["speaker"] for r in rows if r["role"] == "single"})
    keep_single = set(singles[:: args.single_every])
    kept = [r for r in rows if r["role"] == "multi" or r["speaker"] in keep_single]
    if dest.exists():
        shutil.rmtree(dest)
    for r in kept:
        wav = src / r["path"]
        out = dest / Path(r["path"]).with_suffix(".flac")
        out.parent.mkdir(parents=True, exist_ok=True)
        data, sr = sf.read(wav, dtype="int16")
        sf.write(out, data, sr, format="FLAC", subtype="PCM_16")
    fields = ["path", "speaker", "gender", "librispeech_subset", "role", "source", "offset_s", "duration_s", "orig_duration_s"]
    with (dest / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in kept:
            writer.writerow({**r, "path": str(Path(r["path"]).with_suffix(".flac"))})
    shutil.copy(src / "LIBRISPEECH_LICENSE.TXT", dest / "LIBRISPEECH_LICENSE.TXT")
    print(f"{len(kept)} files, {len({r['speaker'] for r in kept})} speakers -> {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
