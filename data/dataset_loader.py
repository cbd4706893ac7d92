"""Summarization datasets as one stream of normalised records, from the hub, local files or the bundled sample.

Every record becomes ``{"id", "text", "summary", "references"}`` (and ``"synthetic": true`` from `bundled-long`).
Sources are streamed (``datasets`` with ``streaming=True``) so memory stays flat on CNN/DailyMail-sized sets. A
source without a validation or test split gets one carved out of train by a seeded hash of the record id: each
record's split depends on nothing but its id and the seed, which works on a stream and gives the same split on
every run.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from config import UserError, first_line

SPLITS = ("train", "val", "test")
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled" / "scitldr-a"
# A synthetic long-document source made of the bundled sample (see LongDocuments); offline like "bundled".
BUNDLED_LONG = "bundled-long"
BUNDLED_SOURCES = ("bundled", BUNDLED_LONG)
# Consecutive records of the bundled sample joined into one document of `bundled-long`, the sizes taken in turn:
# long documents, enough abstracts to outgrow the CPU preset's context when rendered at a large font, and shorter
# ones that fit it, since a model trains only on documents that fit (training leaves the others out).
LONG_DOCUMENT_RECORDS = (16, 4)
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# File stems accepted for each split in a local directory (SciTLDR calls its validation split "dev").
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "validation", "dev"), "test": ("test",)}
HUB_SPLIT_ALIASES = {"train": ("train",), "val": ("validation", "val", "dev"), "test": ("test",)}


class DatasetError(UserError, ValueError):
    """A dataset that cannot be loaded as asked; the message is one line meant for the user."""


@dataclass(frozen=True)
class FieldMap:
    """Where a source keeps its document, its reference summary (or list of them) and, if any, its ids."""

    text: str
    summary: str
    id: Optional[str] = None


@dataclass(frozen=True)
class HubSource:
    fields: FieldMap
    subset: Optional[str] = None
    rows_from: Optional[str] = None  # the repository whose files hold the rows, when not the id itself


# ccdv/cnn_dailymail (the reference README's id) is a loading script, which `datasets` 4 and later no longer run;
# its 3.0.0 rows are the ones abisee/cnn_dailymail keeps as plain Parquet, so they are read from there.
CNN_DAILYMAIL = HubSource(FieldMap("article", "highlights", "id"), subset="3.0.0", rows_from="abisee/cnn_dailymail")
HUB_SOURCES: dict[str, HubSource] = {
    "ccdv/cnn_dailymail": CNN_DAILYMAIL,
    "abisee/cnn_dailymail": CNN_DAILYMAIL,
    "EdinburghNLP/xsum": HubSource(FieldMap("document", "summary", "id")),
    "ccdv/arxiv-summarization": HubSource(FieldMap("article", "abstract")),
    "gigaword": HubSource(FieldMap("document", "summary")),
}
# Known column layouts, tried in order on local files when no field is given. SciTLDR (the bundled sample)
# keeps a list of sentences in `source` and a list of references in `target`.
KNOWN_FIELDS = (
    FieldMap("source", "target", "paper_id"),
    *(hub.fields for hub in HUB_SOURCES.values()),
    FieldMap("text", "summary"),
)


def _as_text(value: Any) -> str:
    """A field's value as stripped text: sentence lists are joined with spaces, missing values are ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""  # CSV readers give NaN for empty cells
    if isinstance(value, (list, tuple)):
        return " ".join(_as_text(v) for v in value if _as_text(v))
    return str(value).strip()


def _as_references(value: Any) -> list[str]:
    """Every non-empty reference summary: a list field keeps all of them, a plain field is the only one."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [text for text in (_as_text(v) for v in items) if text]


class LongDocuments:
    """`bundled-long`: SYNTHETIC long documents, each made of consecutive rows of one split of the bundled
    SciTLDR-A sample (`LONG_DOCUMENT_RECORDS` rows, the sizes in turn, a long document first): their sources
    concatenated (abstracts of unrelated papers, one after another) and their first references joined as the one
    reference summary.

    Nothing like a real long report: it exists so that an offline CPU run can exercise what only long documents
    reach (truncation, fit, hierarchical reading). Records say so with `"synthetic": true`; a trailing group
    shorter than its size is dropped. Iterable again and again, as the loader reads the first row before
    streaming the split.
    """

    def __init__(self, rows: Any, sizes: tuple[int, ...] = LONG_DOCUMENT_RECORDS):
        self.rows, self.sizes = rows, sizes

    def __iter__(self) -> Iterator[dict[str, Any]]:
        sizes = itertools.cycle(self.sizes)
        size, group = next(sizes), []
        for row in self.rows:
            group.append(row)
            if len(group) == size:
                yield self.joined(group)
                size, group = next(sizes), []

    @staticmethod
    def joined(group: list[dict[str, Any]]) -> dict[str, Any]:
        first = (_as_references(row["target"])[:1] for row in group)
        return {"paper_id": f"long-{group[0]['paper_id']}-x{len(group)}",
                "source": [sentence for row in group for sentence in row["source"]],
                "target": [" ".join(ref for refs in first for ref in refs)]}


def stable_id(text: str, summary: str) -> str:
    """An id for sources without one: the same document and summary always get the same id."""
    return hashlib.sha256(f"{text}\0{summary}".encode()).hexdigest()[:16]


def carve_split(record_id: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """The split a train record goes to when the source lacks val/test: a hash of (seed, id) in [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < val_fraction:
        return "val"
    if position < val_fraction + test_fraction:
        return "test"
    return "train"


class DatasetLoader:
    """Streams normalised records of one source, split by split, counting what it skips and why.

    `source` is a hub id, a local JSONL/JSON/CSV/Parquet file, a directory of train/val/test files,
    "bundled" (the SciTLDR-A sample shipped in data/bundled) or "bundled-long" (synthetic long documents made of
    it: LongDocuments). `max_samples` caps the records kept per split.
    """

    def __init__(self, source: str, subset: Optional[str] = None, text_field: Optional[str] = None,
                 summary_field: Optional[str] = None, max_samples: Optional[int] = None, seed: int = 42,
                 val_fraction: float = 0.05, test_fraction: float = 0.05, token: Optional[str] = None):
        if max_samples is not None and max_samples < 1:
            raise DatasetError(f"max_samples must be at least 1, got {max_samples}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise DatasetError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
        self.source = source
        self.subset = subset
        self.text_field, self.summary_field = text_field, summary_field
        self.max_samples = max_samples
        self.seed = seed
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.token = token
        self.kept: Counter[str] = Counter()
        self.skipped: Counter[tuple[str, str]] = Counter()  # (split, reason) -> records
        self._raw_splits = self._open()
        # Resolve the columns from the first row now, so a wrong field fails before anything is written.
        first = next(self._rows(self._raw_splits["train"], "train"), None)
        self.fields = self._resolve_fields(list(first), "train") if first is not None else None

    # -- opening ---------------------------------------------------------------------------------------
    def _open(self) -> dict[str, Any]:
        """Raw streaming splits keyed by our split names; missing val/test are carved from train later."""
        if self.source == BUNDLED_LONG:
            return {split: LongDocuments(rows) for split, rows in self._open_local(BUNDLED_DIR).items()}
        path = BUNDLED_DIR if self.source == "bundled" else Path(self.source)
        if path.exists():
            return self._open_local(path)
        if path.suffix.lower() in LOCAL_FORMATS or self.source.startswith((".", "/", "~")):
            raise DatasetError(f"file not found: {self.source}")
        return self._open_hub()

    def _open_local(self, path: Path) -> dict[str, Any]:
        if path.is_file():
            files = {"train": path}
        else:
            files = {}
            for split, stems in SPLIT_ALIASES.items():
                found = [p for stem in stems for p in sorted(path.glob(f"{stem}.*")) if p.suffix.lower() in LOCAL_FORMATS]
                if found:
                    files[split] = found[0]
            if "train" not in files:
                raise DatasetError(f"no train file ({', '.join(f'train{s}' for s in LOCAL_FORMATS)}) in {path}")
        formats = {LOCAL_FORMATS.get(p.suffix.lower()) for p in files.values()}
        if None in formats:
            raise DatasetError(f"unsupported file type {path.suffix!r}; use one of {', '.join(LOCAL_FORMATS)}")
        if len(formats) > 1:
            raise DatasetError(f"mixed file types in {path}; use one format for all splits")
        import datasets

        try:
            loaded = datasets.load_dataset(formats.pop(), data_files={s: str(p) for s, p in files.items()},
                                           streaming=True)
        except Exception as err:  # the reader's own errors, e.g. a malformed file
            raise DatasetError(f"cannot read {path}: {first_line(err, with_type=True)}") from None
        return {split: loaded[split] for split in files}

    def _open_hub(self) -> dict[str, Any]:
        import datasets

        known = HUB_SOURCES.get(self.source)
        subset = self.subset or (known.subset if known else None)
        try:
            loaded = datasets.load_dataset(known.rows_from if known and known.rows_from else self.source, subset,
                                           streaming=True, token=self.token)
        except Exception as err:  # offline, unknown id, gated set: all surface as one clear line
            raise DatasetError(
                f"cannot load {self.source!r} from the Hugging Face hub ({first_line(err, with_type=True)}); "
                "check the id, --subset and your network, or pass a local file"
            ) from None
        splits = {}
        for split, names in HUB_SPLIT_ALIASES.items():
            name = next((n for n in names if n in loaded), None)
            if name:
                splits[split] = loaded[name]
        if "train" not in splits:
            raise DatasetError(f"{self.source!r} has no train split (splits: {', '.join(loaded)})")
        return splits

    # -- fields ----------------------------------------------------------------------------------------
    def _resolve_fields(self, columns: list[str], split: str) -> FieldMap:
        known = HUB_SOURCES.get(self.source)
        guess = known.fields if known else next(
            (f for f in KNOWN_FIELDS if f.text in columns and f.summary in columns), None)
        text = self.text_field or (guess.text if guess else None)
        summary = self.summary_field or (guess.summary if guess else None)
        available = ", ".join(columns)
        for flag, name in (("text", text), ("summary", summary)):
            if name is not None and name not in columns:
                raise DatasetError(f"{flag} field {name!r} not found in {self.source} ({split}); "
                                   f"available columns: {available}")
        if text is None or summary is None:
            raise DatasetError(f"cannot tell the text and summary columns of {self.source}; "
                               f"pass --text-field and --summary-field (available columns: {available})")
        id_field = guess.id if guess and guess.id in columns else ("id" if "id" in columns else None)
        return FieldMap(text, summary, id_field)

    def normalise(self, row: dict[str, Any], split: str) -> Optional[dict[str, Any]]:
        """The record for one raw row, or None (counted under `split`) when its text or summary is empty."""
        if self.fields is None:  # the train split was empty; this is the first row of another split
            self.fields = self._resolve_fields(list(row), split)
        text = _as_text(row.get(self.fields.text))
        references = _as_references(row.get(self.fields.summary))
        if not text:
            self.skipped[(split, "empty text")] += 1
            return None
        if not references:
            self.skipped[(split, "empty summary")] += 1
            return None
        raw_id = _as_text(row.get(self.fields.id)) if self.fields.id else ""
        record_id = raw_id or stable_id(text, references[0])
        record = {"id": record_id, "text": text, "summary": references[0], "references": references}
        # Marked in every record, so prepared files, references and reports built from them cannot pass for data.
        return {**record, "synthetic": True} if self.source == BUNDLED_LONG else record

    # -- streaming -------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(split, record) pairs in source order: train (with carved-out val/test), then val, then test."""
        carve = {s: s not in self._raw_splits for s in ("val", "test")}
        fractions = (self.val_fraction if carve["val"] else 0.0, self.test_fraction if carve["test"] else 0.0)
        for source_split, stream in self._raw_splits.items():
            targets = {source_split} | ({s for s in carve if carve[s]} if source_split == "train" else set())
            for row in self._rows(stream, source_split):
                if all(self._full(s) for s in targets):
                    break
                record = self.normalise(row, source_split)
                if record is None:
                    continue
                split = carve_split(record["id"], self.seed, *fractions) if source_split == "train" else source_split
                if self._full(split):
                    continue
                self.kept[split] += 1
                yield split, record

    def _full(self, split: str) -> bool:
        return self.max_samples is not None and self.kept[split] >= self.max_samples

    def _rows(self, stream: Any, split: str) -> Iterator[dict[str, Any]]:
        """Rows of one raw split; reader and network errors mid-stream become a DatasetError."""
        iterator = iter(stream)
        while True:
            try:
                row = next(iterator)
            except StopIteration:
                return
            except Exception as err:
                raise DatasetError(f"error while reading {self.source} ({split}): "
                                   f"{first_line(err, with_type=True)}") from None
            yield row


def load_records(source: str, **options: Any) -> dict[str, list[dict[str, Any]]]:
    """All records of a (small) source in memory, by split: a convenience over `DatasetLoader`."""
    splits: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for split, record in DatasetLoader(source, **options):
        splits[split].append(record)
    return splits


_SAFE_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


def file_stem(record_id: str) -> str:
    """A file-name-safe stem for a record id: the id itself when safe, otherwise a hash of it."""
    return record_id if _SAFE_STEM.match(record_id) else hashlib.sha256(record_id.encode()).hexdigest()[:16]
