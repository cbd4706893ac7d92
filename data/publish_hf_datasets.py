"""Publish a prepared dataset (data.prepare_datasets output) to the Hugging Face hub as Parquet with images.

    python -m data.publish_hf_datasets prepared_data --repo-id username/prepared-cnn-dailymail --private
    python -m data.publish_hf_datasets prepared_data --dry-run --shards-dir hub_shards   # no network

Each split (train, validation, test) holds `id`, `text`, `summary`, `references` and, when page images were
generated, `images`: a list of `datasets.Image` with the PNG bytes embedded. `--dry-run` writes the very Parquet
shards `push_to_hub` would upload (same sharding, same embedding, same file names under `data/`), but not the
README.md dataset card that the hub push adds. The token (`--token` or HF_TOKEN) is never printed.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from config import UserError, first_line
from config.cli import Parser, redact, run_command
from data.jsonl import JsonlError, iter_jsonl

# Prepared file stem -> hub split name (the hub's viewer and `load_dataset` know "validation").
HUB_SPLITS = {"train": "train", "val": "validation", "test": "test"}
DATA_DIR = "data"  # where push_to_hub puts the shards of the default configuration


class PublishError(UserError, ValueError):
    """A prepared dataset that cannot be published; one line, never containing the token."""


def _features(with_images: bool):
    from datasets import Features, Image, List, Value

    columns = {"id": Value("string"), "text": Value("string"), "summary": Value("string"),
               "references": List(Value("string"))}
    if with_images:
        columns["images"] = List(Image())
    return Features(columns)


def _rows(path: str, root: str, with_images: bool) -> Iterator[dict[str, Any]]:
    for record in iter_jsonl(path):
        row = {key: record[key] for key in ("id", "text", "summary", "references")}
        if with_images:
            row["images"] = [str(Path(root, image)) for image in record["images"]]
            missing = next((p for p in row["images"] if not Path(p).is_file()), None)
            if missing:
                raise PublishError(f"record {record['id']} names a missing image: {missing}")
        yield row


def build_dataset_dict(prepared_dir: str | os.PathLike, cache_dir: str | os.PathLike):
    """A `DatasetDict` of the prepared splits that have records; Arrow files go to `cache_dir`."""
    from datasets import Dataset, DatasetDict
    from datasets.exceptions import DatasetGenerationError

    root = Path(prepared_dir)
    files = {name: root / f"{stem}.jsonl" for stem, name in HUB_SPLITS.items() if (root / f"{stem}.jsonl").is_file()}
    first = next((next(iter_jsonl(p), None) for p in files.values() if p.stat().st_size), None)
    if first is None:
        raise PublishError(f"no prepared records in {root} (expected train.jsonl, val.jsonl, test.jsonl)")
    missing = {"id", "text", "summary", "references"} - set(first)
    if missing:
        raise PublishError(f"{root} does not look prepared: records lack {', '.join(sorted(missing))}")
    with_images = "images" in first
    features = _features(with_images)
    splits = {}
    for name, path in files.items():
        if not path.stat().st_size:
            continue  # an empty split cannot be pushed; it is simply absent on the hub
        stamp = path.stat()
        try:
            splits[name] = Dataset.from_generator(
                _rows, features=features, cache_dir=str(cache_dir),
                gen_kwargs={"path": str(path), "root": str(root), "with_images": with_images},
                # The file's identity and age, so a re-prepared file is never served from a stale cache.
                fingerprint=f"{name}-{stamp.st_ino}-{stamp.st_size}-{stamp.st_mtime_ns}")
        except DatasetGenerationError as err:  # `datasets` wraps what _rows raised; surface our own message
            if isinstance(err.__cause__, (PublishError, JsonlError)):
                raise err.__cause__ from None
            raise
    return DatasetDict(splits)


def _estimated_bytes(dataset) -> int:
    """Arrow bytes plus the image files they point to: what the split weighs once images are embedded."""
    total = dataset.data.nbytes
    if "images" in dataset.column_names:
        pages = dataset.data.column("images").to_pylist()  # {"bytes": None, "path": ...} items, not decoded
        total += sum(os.path.getsize(image["path"]) for record in pages for image in record)
    return total


def plan_shards(dataset_dict, max_shard_size: int) -> dict[str, int]:
    """Shards per split; passed to push_to_hub and used by the dry run, so both write the same files."""
    # At most one shard per row: push_to_hub cannot write an empty shard.
    return {name: min(len(ds), max(1, math.ceil(_estimated_bytes(ds) / max_shard_size)))
            for name, ds in dataset_dict.items()}


def write_shards(dataset_dict, num_shards: dict[str, int], out_dir: str | os.PathLike) -> list[Path]:
    """Write `<out_dir>/data/<split>-<i>-of-<n>.parquet` exactly as push_to_hub builds them in datasets 5.2:
    contiguous shards, external image files embedded as bytes (`embed_table_storage`), then `to_parquet`."""
    from datasets.arrow_writer import get_writer_batch_size_from_data_size, get_writer_batch_size_from_features
    from datasets.table import embed_table_storage

    paths = []
    for name, dataset in dataset_dict.items():
        batch_size = (get_writer_batch_size_from_features(dataset.features)
                      or get_writer_batch_size_from_data_size(len(dataset), _estimated_bytes(dataset)))
        count = num_shards[name]
        for index in range(count):
            shard = dataset.shard(num_shards=count, index=index, contiguous=True)
            shard = shard.with_format("arrow").map(embed_table_storage, batched=True, batch_size=batch_size,
                                                   keep_in_memory=True).with_format(None)
            path = Path(out_dir, DATA_DIR, f"{name}-{index:05d}-of-{count:05d}.parquet")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            shard.to_parquet(str(tmp), batch_size=batch_size)
            os.replace(tmp, path)
            paths.append(path)
    return paths


def publish_dataset(prepared_dir: str | os.PathLike, repo_id: Optional[str] = None, *, private: bool = False,
                    token: Optional[str] = None, shards_dir: Optional[str | os.PathLike] = None,
                    max_shard_size: int = 500 * 10**6) -> dict[str, Any]:
    """Push `prepared_dir` to `repo_id`, or, with `shards_dir`, write the shards locally instead (dry run).

    Returns {"splits": {name: rows}, "num_shards": {...}, "target": repo id or shards dir}.
    """
    if shards_dir is None and not repo_id:
        raise PublishError("a repo id is needed to push (or use a dry run with a shards directory)")
    with tempfile.TemporaryDirectory(prefix="publish-cache-") as cache:
        dataset_dict = build_dataset_dict(prepared_dir, cache)
        num_shards = plan_shards(dataset_dict, max_shard_size)
        summary = {"splits": {n: len(ds) for n, ds in dataset_dict.items()}, "num_shards": num_shards}
        if shards_dir is not None:
            summary["files"] = [str(p) for p in write_shards(dataset_dict, num_shards, shards_dir)]
            return {**summary, "target": str(shards_dir)}
        try:
            dataset_dict.push_to_hub(repo_id, private=private, token=token, num_shards=num_shards)
        except Exception as err:  # network, auth, permissions: one line, with the token scrubbed
            raise PublishError(redact(f"push to {repo_id} failed: {first_line(err, with_type=True)}", token)) from None
    return {**summary, "target": f"https://huggingface.co/datasets/{repo_id}"}


def _parse_size(value: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
    number, unit = value[:-2], value[-2:].upper()
    try:
        size = int(number) * units[unit] if unit in units else int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 500MB, got {value!r}") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {value!r}")
    return size


def build_parser(secrets: tuple[Optional[str], ...] = ()) -> Parser:
    """The command's flags; its errors never show `secrets` (the tokens given)."""
    parser = Parser(prog="python -m data.publish_hf_datasets", secrets=secrets,
                    description="Push a prepared dataset (text, summary, references, page images) to the "
                                "Hugging Face hub, or write the Parquet shards locally with --dry-run.")
    parser.add_argument("prepared_dir", help="output directory of data.prepare_datasets")
    parser.add_argument("--repo-id", help="hub dataset repository, e.g. username/prepared-cnn-dailymail")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="hub token (default: the HF_TOKEN environment variable, else your login)")
    parser.add_argument("--dry-run", action="store_true",
                        help="write the shards that would be pushed instead of pushing (no network)")
    parser.add_argument("--shards-dir", help="where --dry-run writes shards (default: PREPARED_DIR/hub_shards); "
                                             "giving it implies --dry-run")
    parser.add_argument("--max-shard-size", type=_parse_size, default=500 * 10**6,
                        help="largest Parquet shard, e.g. 500MB (default, as push_to_hub)")
    return parser


def run(args: argparse.Namespace) -> None:
    token = args.token or os.environ.get("HF_TOKEN") or None
    os.environ.setdefault("USE_TORCH", "0")  # this command never needs torch; `datasets` would import it
    dry_run = args.dry_run or args.shards_dir is not None
    shards_dir = (args.shards_dir or str(Path(args.prepared_dir, "hub_shards"))) if dry_run else None
    if not Path(args.prepared_dir).is_dir():
        raise PublishError(f"prepared dataset directory not found: {args.prepared_dir}")
    result = publish_dataset(args.prepared_dir, args.repo_id, private=args.private, token=token,
                             shards_dir=shards_dir, max_shard_size=args.max_shard_size)
    rows = ", ".join(f"{name} {count}" for name, count in result["splits"].items())
    action = "wrote shards to" if dry_run else "pushed to"
    print(f"{action} {result['target']}: {rows} records")


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Known before parsing, so that even a flag error hides them.
    typed = [a.split("=", 1)[1] for a in argv if a.startswith("--token=")]
    typed += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--token"]
    return run_command(build_parser((*typed, os.environ.get("HF_TOKEN"))), run, argv)


if __name__ == "__main__":
    sys.exit(main())
