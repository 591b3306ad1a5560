"""DVC stage ``features``: prepared manifest -> one feature table per selected set.

Outputs (exactly those in dvc.yaml): data/features/<set>.parquet for each set in
``features.sets`` (seed498, mfcc60, extended, dvector: metadata + float32 columns; logmel:
metadata + n_mels + flattened matrices), data/features/rejects.csv (path, utt_id, reason),
metrics/features.json, and the persistent cache data/features/cache/ (re-runs compute
only files, or sets, the cache lacks).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", default="data/prepared/manifest.parquet")
    parser.add_argument("--out-dir", default="data/features")
    parser.add_argument("--cache-dir", default="data/features/cache")
    parser.add_argument("--metrics", default="metrics/features.json")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="compute only shard I of N (files assigned by content hash) into --cache-dir; no tables or metrics. "
        "Run every shard (on any machines sharing the cache), then once without --shard to write the tables",
    )
    args = parser.parse_args(argv)

    import pandas as pd

    from voiceid.config import ConfigError, load_section
    from voiceid.features.dvector import DvectorUnavailable
    from voiceid.features.extract import (
        ManifestError,
        extract_features,
        in_shard,
        parse_shard,
        write_rejects,
        write_tables,
    )
    from voiceid.features.params import FeatureParams
    from voiceid.pipeline import check_params

    try:
        check_params(args.params, "features")  # rules tying "features" to the other sections
        params = load_section(FeatureParams, "features", args.params)
        manifest = pd.read_parquet(args.manifest)
        shard = parse_shard(args.shard) if args.shard else None
        if shard is not None:
            manifest = manifest[in_shard(manifest, *shard)]
        result = extract_features(manifest, params, args.cache_dir, progress=not args.no_progress)
    except (ConfigError, ManifestError, OSError, DvectorUnavailable, ValueError) as exc:
        print(f"features: {exc}", file=sys.stderr)
        return 2
    if shard is not None:  # the cache is the product; the full run assembles the tables from it
        print(
            f"features: shard {args.shard}: {len(manifest)} files, {result.n_computed} computed, {result.n_cached} "
            f"from cache, {len(result.rejects)} rejected in {result.seconds:.1f} s; cache {args.cache_dir}"
        )
        return 0

    out_dir = Path(args.out_dir)
    write_tables(result, out_dir)
    write_rejects(result.rejects, out_dir / "rejects.csv")
    audio_s = float(manifest["duration"].sum()) if "duration" in manifest else None
    report = {
        "files": len(manifest),
        "kept": len(result.meta),
        "rejected": len(result.rejects),
        "computed": result.n_computed,
        "cached": result.n_cached,
        "seconds": round(result.seconds, 3),
        "files_per_s": round(len(manifest) / max(result.seconds, 1e-9), 1),
        "audio_seconds": round(audio_s, 1) if audio_s is not None else None,
        "dims": {name: int(arrays[0].shape[-1]) for name, arrays in result.arrays.items() if arrays},
    }
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(report, indent=2) + "\n")

    for r in result.rejects:
        print(f"rejected {r.path}: {r.reason}", file=sys.stderr)
    print(
        f"features: {report['kept']}/{report['files']} files kept, {report['computed']} computed, "
        f"{report['cached']} from cache, {report['rejected']} rejected in {report['seconds']} s "
        f"({report['files_per_s']} files/s); sets {', '.join(params.sets)}"
    )
    if len(result.meta) == 0:
        print("features: every file was rejected; see data/features/rejects.csv", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
