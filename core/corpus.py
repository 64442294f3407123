"""Corpus stage: text sources -> deduplicated fixed-length token excerpts for the recorder.

Reads one source and writes nothing; `build_corpus` returns a `Corpus` (an int32 array
[n_excerpts, excerpt_len] of token ids without special tokens, a label per excerpt, a report).

Sources (`source` is "stdlib" or a path; a folder literally named "stdlib" is read as "./stdlib"):
- "stdlib": text every machine has, mixed so that any prefix holds all three kinds: 50% the Python
  language reference (`pydoc_data.topics`), 30% docstrings and 20% source code of the standard library,
  both read with `ast` from the .py files (nothing is imported). A seeded shuffle orders each kind; the
  kinds are interleaved excerpt by excerpt by largest deficit (R, D, C, R, R, D, ...), so a smaller
  max_tokens gives a prefix of a larger one. Each file gives a few thousand characters on a first pass
  over all files and the rest on a second pass, so small corpora still span many modules. With SmolLM2's
  tokenizer there are about 110k tokens of reference text and 400k of docstrings; once a kind runs out the
  others fill in (100k tokens take about 2 s on 2 cores).
- a text file, or a folder read recursively in sorted order (hidden entries skipped). In a folder,
  .jsonl/.ndjson/.json, .parquet and .arrow files are read as data files with the field below; any other
  file is read as UTF-8 text whatever its extension, and skipped if binary (a NUL byte in its first MiB)
  or not UTF-8 there. Large files are read and tokenised in pieces cut at a single space or newline
  between words, so a byte-level BPE tokeniser gives the same ids as for the whole file.
- JSON lines (.jsonl, .ndjson, .json) with a string field (default "text"); a .json file that starts
  with "[" is read as one array of objects. Bad JSON, objects without the field and empty texts are
  counted as skipped records.
- Parquet (.parquet) with a string column, read with pyarrow.
- a Hugging Face dataset saved with `save_to_disk` (a folder with state.json, or a DatasetDict folder
  with dataset_dict.json, all splits in listed order): its .arrow files are read with pyarrow alone.

Excerpts: each document is tokenised without special tokens and cut into consecutive windows of exactly
excerpt_len tokens; the ragged tail of a document that gave at least one window is dropped, so every window
starts at a document or window boundary. Documents shorter than one window are packed: their ids are joined
with the ids of "\\n\\n" and cut into windows, the remainder carrying over to the next short document (only
the last remainder of the source is lost); a window that begins with a document does not begin with the
separator. Identical windows (same ids) are kept once and counted. Reading and tokenising stop as soon as
max_tokens // excerpt_len excerpts are kept.

Labels: "notes.txt" or "sub/notes.txt" (relative to the folder), "data.jsonl:12" (line number),
"data.parquet#5" (row index), "ds/train#5", "stdlib:reference/for", "stdlib:doc/json.dumps",
"stdlib:code/json.decoder.JSONDecoder"; a packed excerpt says "FIRST (+N more)".

Longer than 400 lines: one reader per source kind (stdlib, text, JSON lines, Parquet, Arrow, saved datasets) with
the packing they share; splitting the readers into a module of their own is the next step if it grows.
"""

from __future__ import annotations

import ast
import codecs
import importlib.util
import json
import logging
import os
import random
import sysconfig
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)

STDLIB = "stdlib"
STDLIB_MIX = {"reference": 0.5, "doc": 0.3, "code": 0.2}
"""Share of stdlib excerpts taken from each kind of text."""

_BLOCK_BYTES = 1 << 20  # text files are read (and checked for NUL / UTF-8) a MiB at a time
_PIECE_CHARS = 32_000  # longest text handed to the tokeniser in one piece
_BATCH_CHARS = 64_000  # a tokeniser batch grows from _BATCH_CHARS // 16 up to this
_BATCH_PIECES = 256
_FIELD_PROBE = 100  # a field absent from this many leading records is a wrong field name
_FIRST_PASS_CHARS = {"doc": 3_000, "code": 4_000}  # per stdlib file, before moving to the next file
_JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


class CorpusError(Exception):
    """A source that cannot give a corpus; the message is one line saying what to do."""


@dataclass(frozen=True)
class CorpusReport:
    """What building a corpus read, skipped and kept."""

    source: str
    """The source as given ("stdlib" or a path)."""
    documents: int
    """Documents (files, records, stdlib topics/docstrings/definitions) with a token in a kept excerpt."""
    files_read: int
    """Files read as text or data (stdlib: .py files parsed, plus pydoc_data/topics.py)."""
    files_skipped: int
    """Files left out whole (binary, not UTF-8, empty, unreadable, without the field)."""
    skipped: tuple[str, ...]
    """One short reason per skipped file ("x.bin: binary file"), then one line per file with skipped records."""
    excerpts: int
    """Excerpts kept (rows of `Corpus.token_ids`)."""
    tokens: int
    """excerpts * excerpt_len."""
    duplicates_dropped: int
    """Excerpts dropped because an identical one (same token ids) was already kept."""
    records_skipped: int = 0
    """JSON lines / rows left out: bad JSON, no such field, not a string, or empty."""


@dataclass(frozen=True)
class Corpus:
    """Fixed-length token excerpts ready for the recorder."""

    token_ids: np.ndarray
    """int32 [n_excerpts, excerpt_len]; ids without special tokens (the recorder adds BOS itself)."""
    sources: tuple[str, ...]
    """Label of the document each excerpt came from (see the module docstring), one per row."""
    report: CorpusReport


def build_corpus(
    source: str,
    tokenizer: Any,
    *,
    max_tokens: int,
    excerpt_len: int = 64,
    field: str = "text",
    seed: int = 0,
    progress: bool = False,
) -> Corpus:
    """Read `source` and cut it into at most max_tokens // excerpt_len distinct excerpts.

    `tokenizer` is a Hugging Face tokenizer (a fast one is much quicker). `field` names the JSON field or
    the Parquet / dataset column holding the text; `seed` orders the stdlib text. Raises CorpusError.
    """
    if excerpt_len < 2:
        raise CorpusError(f"excerpt length must be at least 2 tokens (got {excerpt_len})")
    if max_tokens < excerpt_len:
        raise CorpusError(
            f"max_tokens ({max_tokens}) is less than one excerpt of {excerpt_len} tokens; "
            "raise max_tokens or lower the excerpt length"
        )
    tally = _Tally()
    streams = _open_streams(source, field, seed, tally)
    sep_ids = _encode(tokenizer, ["\n\n"])[0]
    excerpters = [_cut_excerpts(pieces, tokenizer, excerpt_len, sep_ids, tally) for _, pieces in streams]
    weights = [weight for weight, _ in streams]
    target = max_tokens // excerpt_len

    rows: list[np.ndarray] = []
    labels: list[str] = []
    used_docs: set[tuple[int, int]] = set()
    seen: set[bytes] = set()
    kept_per_stream = [0] * len(streams)
    active = list(range(len(streams)))
    duplicates = 0
    try:
        with tqdm(total=target * excerpt_len, unit="tok", desc="corpus", disable=not progress) as bar:
            while len(rows) < target and active:
                # Largest deficit against the mix so far: any prefix keeps the shares.
                i = max(active, key=lambda k: (weights[k] * (len(rows) + 1) - kept_per_stream[k], -k))
                excerpt = next(excerpters[i], None)
                if excerpt is None:
                    active.remove(i)
                    continue
                key = excerpt.ids.tobytes()
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                rows.append(excerpt.ids)
                labels.append(excerpt.label)
                used_docs.update((i, doc) for doc in excerpt.docs)
                kept_per_stream[i] += 1
                bar.update(excerpt_len)
    finally:
        for excerpter in excerpters:
            excerpter.close()  # runs the readers' `finally`, which count what they skipped

    if not rows:
        raise CorpusError(_nothing_usable(source, tally, excerpt_len))
    if len(rows) < target:
        logger.warning("%s gave %d of the %d tokens asked for", source, len(rows) * excerpt_len, max_tokens)
    report = _report(source, tally, len(used_docs), len(rows), excerpt_len, duplicates)
    return Corpus(token_ids=np.stack(rows).astype(np.int32, copy=False), sources=tuple(labels), report=report)


def _report(source: str, tally: _Tally, documents: int, excerpts: int, excerpt_len: int, duplicates: int
            ) -> CorpusReport:
    """What a finished read used and skipped (also logged)."""
    report = CorpusReport(
        source=source,
        documents=documents,
        files_read=len(tally.files_read),
        files_skipped=len(tally.skipped_files),
        skipped=tuple(f"{label}: {reason}" for label, (reason, _) in tally.skipped_files.items()) + tuple(tally.notes),
        excerpts=excerpts,
        tokens=excerpts * excerpt_len,
        duplicates_dropped=duplicates,
        records_skipped=tally.records_skipped,
    )
    logger.info(
        "corpus %s: %d excerpts x %d tokens from %d documents (%d duplicates dropped, %d files skipped)",
        source, excerpts, excerpt_len, documents, duplicates, report.files_skipped,
    )
    return report


# ---------------------------------------------------------------------------------------------------------
# Documents to excerpts


@dataclass(frozen=True)
class _Piece:
    """Text of one document, or one piece of it; pieces up to `end` form one document."""

    label: str
    text: str
    end: bool = True


@dataclass(frozen=True)
class _Excerpt:
    """One window, before deduplication."""

    ids: np.ndarray  # int32 [excerpt_len]
    label: str
    docs: tuple[int, ...]  # serials (within the stream) of the documents it overlaps


@dataclass
class _Tally:
    """What the readers saw; turned into the report."""

    files_read: set[str] = field(default_factory=set)
    skipped_files: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (reason, kind)
    notes: list[str] = field(default_factory=list)
    records_skipped: int = 0
    tokens_seen: int = 0

    def skip(self, label: str, reason: str, kind: str | None = None) -> None:
        """Leave a whole file out; `kind` groups reasons in the "nothing usable" message."""
        self.skipped_files.setdefault(label, (reason, kind or reason))
        logger.info("skipped %s: %s", label, reason)


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (one batched call)."""
    out = tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
    )
    return out["input_ids"]


def _batches(pieces: Iterable[_Piece]) -> Iterator[list[_Piece]]:
    """Group pieces for batched tokenising; batches start small so a tiny corpus tokenises little."""
    limit = _BATCH_CHARS // 16
    batch: list[_Piece] = []
    chars = 0
    for piece in pieces:
        batch.append(piece)
        chars += len(piece.text)
        if chars >= limit or len(batch) >= _BATCH_PIECES:
            yield batch
            batch, chars, limit = [], 0, min(2 * limit, _BATCH_CHARS)
    if batch:
        yield batch


def _cut_excerpts(
    pieces: Iterator[_Piece], tokenizer: Any, excerpt_len: int, sep_ids: list[int], tally: _Tally
) -> Generator[_Excerpt, None, None]:
    """Windows of excerpt_len tokens: long documents cut in place, short ones packed (see module docstring)."""
    serial = -1
    doc: list[int] = []  # ids of the current document not yet in a window
    doc_label = ""
    doc_cut = False  # the current document gave a window, so it is long: its tail is dropped
    new_doc = True
    pack: list[int] = []  # short documents joined by sep_ids, not yet in a window
    spans: list[tuple[int, int, int, str]] = []  # (start, end, serial, label) of each document in `pack`

    def window(ids: list[int], label: str, docs: tuple[int, ...]) -> _Excerpt:
        return _Excerpt(np.asarray(ids, dtype=np.int32), label, docs)

    try:
        for batch in _batches(pieces):
            for piece, ids in zip(batch, _encode(tokenizer, [p.text for p in batch]), strict=True):
                tally.tokens_seen += len(ids)
                if new_doc:
                    serial, doc, doc_label, doc_cut = serial + 1, [], piece.label, False
                doc.extend(ids)
                start = 0
                while len(doc) - start >= excerpt_len:
                    yield window(doc[start : start + excerpt_len], doc_label, (serial,))
                    start += excerpt_len
                    doc_cut = True
                del doc[:start]
                new_doc = piece.end
                if not piece.end or doc_cut or not doc:
                    continue
                if pack:
                    pack.extend(sep_ids)
                spans.append((len(pack), len(pack) + len(doc), serial, doc_label))
                pack.extend(doc)
                while len(pack) >= excerpt_len:
                    inside = [s for s in spans if s[0] < excerpt_len]
                    label = inside[0][3] + (f" (+{len(inside) - 1} more)" if len(inside) > 1 else "")
                    yield window(pack[:excerpt_len], label, tuple(s[2] for s in inside))
                    del pack[:excerpt_len]
                    spans = [(s - excerpt_len, e - excerpt_len, n, lab) for s, e, n, lab in spans if e > excerpt_len]
                    if not spans:
                        pack.clear()  # only separator ids were left
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()  # runs the reader's `finally`, which counts the records it skipped


# ---------------------------------------------------------------------------------------------------------
# Sources to documents


def _open_streams(source: str, field: str, seed: int, tally: _Tally) -> list[tuple[float, Iterator[_Piece]]]:
    """(share, pieces) per stream of documents: three for stdlib, one for anything else."""
    if source == STDLIB:
        return _stdlib_streams(seed, tally)
    path = Path(source).expanduser()
    if not path.exists():
        raise CorpusError(
            f"corpus source not found: {source}; give a text file, a folder, a .jsonl/.parquet file, "
            f'a saved Hugging Face dataset folder, or "{STDLIB}"'
        )
    kind = _source_kind(path)
    if kind == "hf":
        return [(1.0, _hf_pieces(path, field, tally))]
    if kind == "folder":
        return [(1.0, _folder_pieces(path, field, tally))]
    return [(1.0, _file_pieces(path, path.name, kind, field, tally, strict=True))]


def _source_kind(path: Path) -> str:
    """The reader a path needs: "hf", "folder", "json", "parquet", "arrow" or "text"."""
    if path.is_dir():
        is_hf = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
        return "hf" if is_hf else "folder"
    suffix = path.suffix.lower()
    if suffix in _JSON_SUFFIXES:
        return "json"
    return {".parquet": "parquet", ".arrow": "arrow"}.get(suffix, "text")


def _folder_pieces(root: Path, field: str, tally: _Tally) -> Iterator[_Piece]:
    """Every non-hidden file under root, in sorted order, read by its kind."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            label = path.relative_to(root).as_posix()
            yield from _file_pieces(path, label, _source_kind(path), field, tally, strict=False)


def _file_pieces(path: Path, label: str, kind: str, field: str, tally: _Tally, *, strict: bool) -> Iterator[_Piece]:
    """Documents of one file; `strict` turns a missing field into CorpusError instead of a skipped file."""
    if kind == "json":
        return _json_pieces(path, label, field, tally, strict=strict)
    if kind in ("parquet", "arrow"):
        return _table_pieces(path, label, kind, field, tally, strict=strict)
    return _text_pieces(path, label, tally)


def _text_pieces(path: Path, label: str, tally: _Tally) -> Iterator[_Piece]:
    """One UTF-8 text file as one document, in pieces of at most _PIECE_CHARS characters."""
    try:
        handle = path.open("rb")
    except OSError as err:
        tally.skip(label, f"unreadable ({err.strerror or type(err).__name__})", "unreadable")
        return
    with handle:
        decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        text = ""
        started = False
        for block_no, block in enumerate(iter(lambda: handle.read(_BLOCK_BYTES), b"")):
            if b"\x00" in block:
                if block_no == 0:
                    tally.skip(label, "binary file", "binary")
                    return
                logger.warning("%s: NUL bytes after the first MiB removed", label)
                block = block.replace(b"\x00", b"")
            try:
                text += decoder.decode(block)
            except UnicodeDecodeError as err:
                if block_no == 0:
                    tally.skip(label, "not UTF-8", "not UTF-8")
                    return
                logger.warning("%s: not UTF-8 after the first MiB (%s); bad bytes replaced", label, err.reason)
                decoder.errors = "replace"  # the decoder kept its state: decode the block again
                text += decoder.decode(block)
            while len(text) > _PIECE_CHARS:
                cut = _cut_point(text, _PIECE_CHARS)
                piece, text = text[:cut], text[cut:]
                if not started:
                    piece = piece.lstrip()
                    if not piece:
                        continue
                    tally.files_read.add(label)
                    started = True
                yield _Piece(label, piece, end=False)
        try:
            text += decoder.decode(b"", final=True)
        except UnicodeDecodeError:  # the file ends inside a character
            if not started:
                tally.skip(label, "not UTF-8", "not UTF-8")
                return
            decoder.errors = "replace"
            text += decoder.decode(b"", final=True)
        text = text.rstrip() if started else text.strip()
        if not started:
            if not text:
                tally.skip(label, "empty", "empty")
                return
            tally.files_read.add(label)
        yield _Piece(label, text, end=True)


def _cut_point(text: str, limit: int) -> int:
    """Where to end a piece: before a lone newline or space between two words, so tokens match the whole."""
    low = limit // 2
    for sep in ("\n", " "):
        i = text.rfind(sep, low, limit)
        while i > low:
            if not text[i - 1].isspace() and not text[i + 1].isspace():
                return i
            i = text.rfind(sep, low, i)
    return limit


def _record_text(record: object, field: str, counts: Counter[str]) -> str | None:
    """The stripped text of one JSON record or row, or None (counted in `counts` by reason)."""
    if isinstance(record, dict):
        if field not in record:
            counts["missing"] += 1
            return None
        record = record[field]
    if not isinstance(record, str):
        counts["not text"] += 1
        return None
    text = record.strip()
    if not text:
        counts["empty"] += 1
        return None
    return text


def _note_records(label: str, field: str, counts: Counter[str], total: int, tally: _Tally) -> None:
    """Add one report line for the records of a file that were left out."""
    skipped = sum(counts.values())
    if not skipped:
        return
    tally.records_skipped += skipped
    names = {"bad": "bad JSON", "missing": f'without "{field}"', "not text": "not a string", "empty": "empty"}
    parts = ", ".join(f"{n} {names[k]}" for k, n in counts.most_common())
    tally.notes.append(f"{label}: {skipped} of {total} records skipped ({parts})")


def _wrong_field(label: str, field: str, available: Iterable[str], tally: _Tally, *, strict: bool) -> None:
    names = ", ".join(f'"{name}"' for name in available) or "none"
    if strict:
        raise CorpusError(f'no field "{field}" in {label}; its fields are {names}: pass one of them as the field')
    tally.skip(label, f'no field "{field}" (fields: {names})', f'without "{field}"')


def _json_pieces(path: Path, label: str, field: str, tally: _Tally, *, strict: bool) -> Iterator[_Piece]:
    """Documents from JSON lines (or one JSON array): the string `field` of each object."""
    try:
        handle = path.open("rb")
    except OSError as err:
        tally.skip(label, f"unreadable ({err.strerror or type(err).__name__})", "unreadable")
        return
    counts: Counter[str] = Counter()
    keys: dict[str, None] = {}  # fields seen, in order, for the wrong-field message
    found = total = 0
    try:
        with handle:
            head = handle.read(8192)
            if b"\x00" in head:
                tally.skip(label, "binary file", "binary")
                return
            if not head.strip():
                tally.skip(label, "empty", "empty")
                return
            handle.seek(0)
            if head.lstrip().startswith(b"["):
                records = _json_array(handle, label, counts)
                sep = "#"
            else:
                records = _json_lines(handle, counts)
                sep = ":"
            for number, record in records:
                total += 1
                if isinstance(record, dict) and len(keys) < 50:
                    keys.update(dict.fromkeys(record))
                text = _record_text(record, field, counts)
                if text is None:
                    if not found and counts["missing"] >= _FIELD_PROBE:
                        break
                    continue
                if not found:
                    tally.files_read.add(label)
                found += 1
                yield _Piece(f"{label}{sep}{number}", text)
        if not found and counts["missing"]:
            counts.clear()
            _wrong_field(label, field, keys, tally, strict=strict)
        elif not found:
            tally.skip(label, "no usable records", "no usable records")
    finally:
        _note_records(label, field, counts, total + counts["bad"], tally)


def _json_lines(handle: Any, counts: Counter[str]) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line; bad lines are counted."""
    for number, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
            counts["bad"] += 1


def _json_array(handle: Any, label: str, counts: Counter[str]) -> Iterator[tuple[int, object]]:
    """(index, item) of a file holding one JSON array."""
    try:
        items = json.loads(handle.read())
    except (ValueError, UnicodeDecodeError):
        counts["bad"] += 1
        return
    yield from enumerate(items if isinstance(items, list) else [items])


def _is_text_type(arrow_type: Any) -> bool:
    import pyarrow as pa

    is_view = getattr(pa.types, "is_string_view", lambda _: False)
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or is_view(arrow_type)


def _arrow_columns(path: Path) -> tuple[Any, Callable[[str], Iterator[Any]]]:
    """(schema, column reader) of a Parquet or Arrow (IPC stream or file) file; raises on a bad file.

    The column reader yields the chunks (pyarrow arrays) of one column, reading no other column of a Parquet file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        parquet = pq.ParquetFile(path)

        def parquet_chunks(name: str) -> Iterator[Any]:
            for batch in parquet.iter_batches(batch_size=1024, columns=[name]):
                yield batch.column(0)

        return parquet.schema_arrow, parquet_chunks
    try:
        stream = pa.ipc.open_stream(pa.memory_map(str(path)))
        schema, batches = stream.schema, iter(stream)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        schema, batches = reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))

    def arrow_chunks(name: str) -> Iterator[Any]:
        index = schema.get_field_index(name)
        for batch in batches:
            yield batch.column(index)

    return schema, arrow_chunks


def _table_pieces(
    path: Path,
    label: str,
    kind: str,
    field: str,
    tally: _Tally,
    *,
    strict: bool,
    row_label: str | None = None,
    first_row: int = 0,
) -> Generator[_Piece, None, int]:
    """Documents from the string column `field` of a Parquet or Arrow file, labelled ROW_LABEL#row.

    Returns the row number after the file's last row (rows count from `first_row`).
    """
    import pyarrow as pa

    try:
        schema, chunks = _arrow_columns(path)
    except (pa.ArrowException, OSError) as err:
        if path.stat().st_size == 0:
            tally.skip(label, "empty", "empty")
        else:
            tally.skip(label, f"not a readable {kind} file ({str(err).splitlines()[0][:80]})", f"bad {kind}")
        return first_row
    if field not in schema.names:
        _wrong_field(label, field, schema.names, tally, strict=strict)
        return first_row
    column_type = schema.field(field).type
    if not _is_text_type(column_type):
        message = f'field "{field}" of {label} holds {column_type}, not text'
        if strict:
            raise CorpusError(f"{message}; pass the name of a text column as the field")
        tally.skip(label, message, "not text")
        return first_row
    counts: Counter[str] = Counter()
    row = first_row
    try:
        for chunk in chunks(field):
            for value in chunk.to_pylist():
                text = _record_text(value, field, counts)
                if text is not None:
                    tally.files_read.add(label)
                    yield _Piece(f"{row_label or label}#{row}", text)
                row += 1
        if label not in tally.files_read:
            tally.skip(label, "no usable rows", "no usable rows")
    finally:
        _note_records(label, field, counts, row - first_row, tally)
    return row


def _hf_splits(root: Path) -> list[tuple[str, Path]]:
    """(split name, folder) of a saved Dataset ("" name) or DatasetDict."""
    dict_file = root / "dataset_dict.json"
    if dict_file.is_file():
        try:
            splits = json.loads(dict_file.read_text(encoding="utf-8"))["splits"]
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise CorpusError(f"{dict_file} is not a DatasetDict index ({err}); save the dataset again") from err
        return [(str(name), root / str(name)) for name in splits]
    return [("", root)]


def _hf_pieces(root: Path, field: str, tally: _Tally) -> Iterator[_Piece]:
    """Documents of a dataset saved with `save_to_disk`: its .arrow shards in state.json order."""
    for split, folder in _hf_splits(root):
        name = f"{root.name}/{split}" if split else root.name
        try:
            state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            shards = [folder / entry["filename"] for entry in state["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError):
            shards = sorted(folder.glob("*.arrow"))
        if not shards:
            raise CorpusError(f"no .arrow files in {folder}; is it a dataset saved with save_to_disk?")
        row = 0
        for shard in shards:
            label = f"{root.name}/{shard.relative_to(root).as_posix()}"
            row = yield from _table_pieces(
                shard, label, "arrow", field, tally, strict=True, row_label=name, first_row=row
            )


# ---------------------------------------------------------------------------------------------------------
# stdlib


def _stdlib_streams(seed: int, tally: _Tally) -> list[tuple[float, Iterator[_Piece]]]:
    """Reference text, docstrings and code of this Python's standard library, each in a seeded order."""
    root = Path(sysconfig.get_path("stdlib"))
    files = _stdlib_files(root)
    doc_files, code_files = list(files), list(files)
    random.Random(f"{seed}:doc").shuffle(doc_files)
    random.Random(f"{seed}:code").shuffle(code_files)
    streams = [
        (STDLIB_MIX["reference"], _reference_pieces(seed, tally)),
        (STDLIB_MIX["doc"], _stdlib_pieces(root, doc_files, "doc", tally)),
        (STDLIB_MIX["code"], _stdlib_pieces(root, code_files, "code", tally)),
    ]
    if not files:
        logger.warning("no .py files under %s: the stdlib corpus has reference text only", root)
    return streams


def _stdlib_files(root: Path) -> list[str]:
    """Relative paths of the stdlib's .py files (no tests, no site-packages), sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith((".", "config-")))
        rel = Path(dirpath).relative_to(root)
        found.extend((rel / name).as_posix() for name in filenames if name.endswith(".py"))
    return sorted(found)


def _reference_pieces(seed: int, tally: _Tally) -> Iterator[_Piece]:
    """Topics of the language reference text that pydoc shows, one document each."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        logger.warning("pydoc_data is missing: the stdlib corpus has no reference text")
        return
    tally.files_read.add("stdlib:pydoc_data/topics.py")
    names = sorted(topics)
    random.Random(f"{seed}:reference").shuffle(names)
    for name in names:
        text = topics[name].strip()
        if text:
            yield _Piece(f"stdlib:reference/{name}", text)


def _stdlib_pieces(root: Path, files: list[str], kind: str, tally: _Tally) -> Iterator[_Piece]:
    """Docstrings ("doc") or top-level definitions ("code") of each file; a first pass over all files
    takes about _FIRST_PASS_CHARS[kind] characters from each, a second pass the rest."""
    budget = _FIRST_PASS_CHARS[kind]
    for first_pass in (True, False):
        for rel in files:
            parsed = _parse_stdlib_file(root, rel, tally)
            if parsed is None:
                continue
            module = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            items = _docstrings(module, parsed[1]) if kind == "doc" else _definitions(module, *parsed)
            chars = 0
            for index, (name, text) in enumerate(items):
                in_first = index == 0 or chars < budget
                chars += len(text)
                if in_first == first_pass:
                    yield _Piece(f"stdlib:{kind}/{name}", text)


def _parse_stdlib_file(root: Path, rel: str, tally: _Tally) -> tuple[list[str], ast.Module] | None:
    """(source lines, tree) of one stdlib file, or None if it cannot be read or parsed."""
    label = f"stdlib:{rel}"
    try:
        source = importlib.util.decode_source((root / rel).read_bytes())
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError) as err:
        tally.skip(label, f"not parseable ({type(err).__name__})", "not parseable")
        return None
    tally.files_read.add(label)
    return source.splitlines(keepends=True), tree


def _docstrings(module: str, tree: ast.Module) -> list[tuple[str, str]]:
    """(qualified name, docstring) of the module, its classes, functions and methods, in source order."""
    found = []
    doc = ast.get_docstring(tree)
    if doc and doc.strip():
        found.append((module, doc.strip()))

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{node.name}"
                text = ast.get_docstring(node)
                if text and text.strip():
                    found.append((name, text.strip()))
                if isinstance(node, ast.ClassDef):
                    visit(node.body, name)

    visit(tree.body, module)
    return found


def _definitions(module: str, lines: list[str], tree: ast.Module) -> list[tuple[str, str]]:
    """(qualified name, source) of each top-level function and class, decorators included."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.end_lineno:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            text = "".join(lines[first - 1 : node.end_lineno]).strip()
            if text:
                found.append((f"{module}.{node.name}", text))
    return found


# ---------------------------------------------------------------------------------------------------------
# Messages


def _nothing_usable(source: str, tally: _Tally, excerpt_len: int) -> str:
    """The one-line CorpusError message for a source that gave no excerpt."""
    parts = []
    if tally.skipped_files:
        kinds = Counter(kind for _, kind in tally.skipped_files.values())
        count = len(tally.skipped_files)
        breakdown = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        parts.append(f"{count} file{'s' if count != 1 else ''} skipped ({breakdown})")
    if tally.records_skipped:
        parts.append(f"{tally.records_skipped} records skipped")
    if tally.tokens_seen:
        parts.append(
            f"only {tally.tokens_seen} tokens of text, less than one excerpt of {excerpt_len}; "
            "add text or lower the excerpt length"
        )
    if not parts:
        parts.append("no text found")
    if tally.skipped_files and not tally.tokens_seen:
        parts.append("give plain text saved as UTF-8 (.txt, .md, .py ...)")
    return f"no usable text in {source}: " + "; ".join(parts)
