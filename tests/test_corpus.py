"""Tests of core/corpus.py: every source format, the stdlib mix, packing, dedup and every bad input.

A tiny byte-level BPE tokenizer is trained in code, so nothing is downloaded and no model is loaded.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core import corpus as corpus_module
from core.corpus import STDLIB, CorpusError, build_corpus

L = 16  # excerpt length used by most tests: small, so small files give several excerpts

_TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog. Numbers like 12, 345 and 6789 appear too.",
    "def f(x):\n    return x + 1\n\nclass A:\n    pass\n",
    "Return the value of the named attribute of object. If the attribute does not exist, raise an error.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A GPT-2-style byte-level BPE tokenizer (about 400 tokens), wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    backend.train_from_iterator(_TRAINING_TEXT * 5, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _prose(n_words: int, start: int = 0) -> str:
    """Text whose windows never repeat (every word carries its number)."""
    return " ".join(f"word{i}" for i in range(start, start + n_words))


# ---------------------------------------------------------------------------------------------------------
# Text files and folders


def test_text_file_gives_consecutive_windows_and_drops_the_tail(tmp_path, tiny_tokenizer):
    text = _prose(200)
    (tmp_path / "notes.txt").write_text("\n  " + text + "\n\n", encoding="utf-8")
    expected = _ids(tiny_tokenizer, text)
    n = len(expected) // L

    corpus = build_corpus(str(tmp_path / "notes.txt"), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)

    assert corpus.token_ids.dtype == np.int32
    assert corpus.token_ids.shape == (n, L)
    np.testing.assert_array_equal(corpus.token_ids.reshape(-1), expected[: n * L])
    assert corpus.sources == ("notes.txt",) * n
    report = corpus.report
    assert (report.documents, report.files_read, report.files_skipped, report.skipped) == (1, 1, 0, ())
    assert (report.excerpts, report.tokens, report.duplicates_dropped) == (n, n * L, 0)


def test_max_tokens_is_floored_to_whole_excerpts(tmp_path, tiny_tokenizer):
    (tmp_path / "notes.txt").write_text(_prose(300), encoding="utf-8")
    corpus = build_corpus(str(tmp_path / "notes.txt"), tiny_tokenizer, max_tokens=3 * L + L - 1, excerpt_len=L)
    assert corpus.token_ids.shape == (3, L)
    assert corpus.report.tokens == 3 * L


def test_a_large_text_file_is_tokenised_in_pieces_with_the_same_ids(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(corpus_module, "_PIECE_CHARS", 300)
    monkeypatch.setattr(corpus_module, "_BLOCK_BYTES", 257)  # blocks end inside the two-byte "é"
    lines = [f"Line {i}: caf\u00e9 word{i}  and  more{i}.\n" + ("\n" if i % 7 == 0 else "") for i in range(300)]
    text = "".join(lines).strip()
    (tmp_path / "big.txt").write_text(text, encoding="utf-8")
    expected = _ids(tiny_tokenizer, text)
    n = len(expected) // L

    corpus = build_corpus(str(tmp_path / "big.txt"), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)

    np.testing.assert_array_equal(corpus.token_ids.reshape(-1), expected[: n * L])
    assert corpus.report.documents == 1


def test_folder_is_read_recursively_and_bad_files_are_skipped(tmp_path, tiny_tokenizer):
    (tmp_path / "b.txt").write_text(_prose(40, 0), encoding="utf-8")
    (tmp_path / "a.md").write_text("# Title\n\n" + _prose(40, 100), encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.rst").write_text(_prose(40, 200), encoding="utf-8")
    (tmp_path / "sub" / "d.data").write_text(_prose(40, 300), encoding="utf-8")  # any extension that is text
    (tmp_path / ".hidden.txt").write_text(_prose(40, 400), encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text(_prose(40, 500), encoding="utf-8")
    (tmp_path / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp_path / "latin.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")

    corpus = build_corpus(str(tmp_path), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)

    assert list(dict.fromkeys(corpus.sources)) == ["a.md", "b.txt", "sub/c.rst", "sub/d.data"]
    report = corpus.report
    assert (report.files_read, report.files_skipped, report.documents) == (4, 3, 4)
    assert sorted(report.skipped) == ["empty.txt: empty", "image.bin: binary file", "latin.txt: not UTF-8"]


def test_data_files_in_a_folder_without_the_field_are_skipped(tmp_path, tiny_tokenizer):
    (tmp_path / "notes.txt").write_text(_prose(40, 500), encoding="utf-8")
    (tmp_path / "meta.json").write_text(json.dumps({"name": "x", "version": 2}) + "\n", encoding="utf-8")
    _write_parquet(tmp_path / "rows.parquet")

    corpus = build_corpus(str(tmp_path), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)

    assert corpus.report.skipped == ('meta.json: no field "text" (fields: "name", "version")',)
    assert list(dict.fromkeys(corpus.sources)) == ["notes.txt", "rows.parquet#0"]


def test_bad_bytes_after_the_first_block_are_replaced(tmp_path, tiny_tokenizer, monkeypatch, caplog):
    monkeypatch.setattr(corpus_module, "_BLOCK_BYTES", 64)
    (tmp_path / "mixed.txt").write_bytes(_prose(40).encode() + b" caf\xe9 " + _prose(40, 100).encode())

    corpus = build_corpus(str(tmp_path / "mixed.txt"), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)

    assert corpus.report.files_skipped == 0
    assert "\ufffd" in tiny_tokenizer.decode(corpus.token_ids.reshape(-1))
    assert "not UTF-8 after the first MiB" in caplog.text


def test_identical_excerpts_are_kept_once_and_counted(tmp_path, tiny_tokenizer):
    text = _prose(60)
    (tmp_path / "copy1.txt").write_text(text, encoding="utf-8")
    (tmp_path / "copy2.txt").write_text(text, encoding="utf-8")
    (tmp_path / "other.txt").write_text(_prose(60, 1000), encoding="utf-8")
    per_file = len(_ids(tiny_tokenizer, text)) // L

    corpus = build_corpus(str(tmp_path), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)

    assert corpus.report.duplicates_dropped == per_file
    assert len({row.tobytes() for row in corpus.token_ids}) == len(corpus.token_ids)
    assert "copy2.txt" not in corpus.sources
    assert corpus.report.documents == 2


# ---------------------------------------------------------------------------------------------------------
# JSON lines, Parquet, saved datasets


def test_jsonl_reads_the_field_and_counts_bad_lines(tmp_path, tiny_tokenizer):
    good = [_prose(30, 100 * i) for i in range(4)]
    lines = [
        json.dumps({"body": good[0], "id": 1}),
        "{not json",
        json.dumps({"text": "the wrong field"}),
        "",
        json.dumps({"body": good[1]}),
        json.dumps({"body": 123}),
        json.dumps({"body": "   "}),
        json.dumps({"body": good[2]}),
        json.dumps({"body": good[3]}),
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    corpus = build_corpus(str(tmp_path / "data.jsonl"), tiny_tokenizer, max_tokens=10**6, excerpt_len=L, field="body")

    assert list(dict.fromkeys(corpus.sources)) == ["data.jsonl:1", "data.jsonl:5", "data.jsonl:8", "data.jsonl:9"]
    report = corpus.report
    assert report.records_skipped == 4
    assert report.documents == 4
    assert report.files_skipped == 0
    (note,) = report.skipped
    assert note.startswith("data.jsonl: 4 of 8 records skipped (")
    for part in ("1 bad JSON", '1 without "body"', "1 not a string", "1 empty"):
        assert part in note


def test_json_array_file(tmp_path, tiny_tokenizer):
    records = [{"text": _prose(30, 100 * i)} for i in range(3)]
    (tmp_path / "data.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    corpus = build_corpus(str(tmp_path / "data.json"), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)
    assert list(dict.fromkeys(corpus.sources)) == ["data.json#0", "data.json#1", "data.json#2"]


def test_parquet_column(tmp_path, tiny_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [_prose(30, 0), None, _prose(30, 100), _prose(30, 200)]
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "content": texts}), tmp_path / "data.parquet")

    corpus = build_corpus(
        str(tmp_path / "data.parquet"), tiny_tokenizer, max_tokens=10**6, excerpt_len=L, field="content"
    )

    assert list(dict.fromkeys(corpus.sources)) == ["data.parquet#0", "data.parquet#2", "data.parquet#3"]
    assert corpus.report.records_skipped == 1
    with pytest.raises(CorpusError, match=re.escape('field "id" of data.parquet holds int64, not text')):
        build_corpus(str(tmp_path / "data.parquet"), tiny_tokenizer, max_tokens=1000, excerpt_len=L, field="id")


def _save_dataset(path: Path, splits: dict[str, list[str]] | list[str]) -> None:
    import datasets

    datasets.disable_progress_bars()
    if isinstance(splits, dict):
        dataset = datasets.DatasetDict(
            {
                name: datasets.Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})
                for name, texts in splits.items()
            }
        )
    else:
        dataset = datasets.Dataset.from_dict({"text": splits, "id": list(range(len(splits)))})
    dataset.save_to_disk(str(path))


def test_saved_dataset(tmp_path, tiny_tokenizer):
    _save_dataset(tmp_path / "ds", [_prose(30, 100 * i) for i in range(3)])
    corpus = build_corpus(str(tmp_path / "ds"), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)
    assert list(dict.fromkeys(corpus.sources)) == ["ds#0", "ds#1", "ds#2"]
    assert corpus.report.files_read == 1


def test_saved_dataset_dict_reads_every_split(tmp_path, tiny_tokenizer):
    _save_dataset(tmp_path / "dd", {"train": [_prose(30, 0), _prose(30, 100)], "test": [_prose(30, 200)]})
    corpus = build_corpus(str(tmp_path / "dd"), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)
    assert list(dict.fromkeys(corpus.sources)) == ["dd/train#0", "dd/train#1", "dd/test#0"]
    assert corpus.report.documents == 3


def _write_jsonl(path: Path) -> None:
    path.write_text(json.dumps({"text": _prose(30), "id": 1}) + "\n", encoding="utf-8")


def _write_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [_prose(30)], "id": [1]}), path)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("data.jsonl", _write_jsonl),
        ("data.parquet", _write_parquet),
        ("ds", lambda path: _save_dataset(path, [_prose(30)])),
    ],
)
def test_a_wrong_field_names_the_available_ones(tmp_path, tiny_tokenizer, name, write):
    write(tmp_path / name)
    with pytest.raises(CorpusError, match=r'no field "title" in .*"text".*"id"|no field "title" in .*"id".*"text"'):
        build_corpus(str(tmp_path / name), tiny_tokenizer, max_tokens=1000, excerpt_len=L, field="title")


# ---------------------------------------------------------------------------------------------------------
# Packing of short documents


def test_short_documents_are_packed_with_blank_lines(tmp_path, tiny_tokenizer):
    length = 40  # about two and a half documents
    docs = [f"Doc {i} says hi." for i in range(40)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    sep = _ids(tiny_tokenizer, "\n\n")
    joined: list[int] = []
    for doc in docs:
        if len(joined) % length:  # a window that starts with a document does not start with the separator
            joined += sep
        joined += _ids(tiny_tokenizer, doc)
    n = len(joined) // length
    assert all(len(_ids(tiny_tokenizer, d)) < length for d in docs)

    corpus = build_corpus(str(tmp_path / "docs.jsonl"), tiny_tokenizer, max_tokens=10**6, excerpt_len=length)

    np.testing.assert_array_equal(corpus.token_ids.reshape(-1), joined[: n * length])
    assert tiny_tokenizer.decode(corpus.token_ids[0]).startswith("Doc 0 says hi.\n\nDoc 1 says hi.\n\nDoc 2")
    assert corpus.sources[0] == "docs.jsonl:1 (+2 more)"
    assert corpus.report.documents >= len(docs) - 3  # the last remainder, under one excerpt, is lost


def test_a_long_document_keeps_its_own_windows_among_short_ones(tmp_path, tiny_tokenizer):
    long_doc = _prose(50, 1000)
    docs = ["Short one.", long_doc, "Short two.", "Short three. " * 3]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    long_ids = _ids(tiny_tokenizer, long_doc)

    corpus = build_corpus(str(tmp_path / "docs.jsonl"), tiny_tokenizer, max_tokens=10**6, excerpt_len=L)

    own = [row for row, label in zip(corpus.token_ids, corpus.sources, strict=True) if label == "docs.jsonl:2"]
    assert len(own) == len(long_ids) // L
    np.testing.assert_array_equal(np.concatenate(own), long_ids[: len(own) * L])


# ---------------------------------------------------------------------------------------------------------
# stdlib


def _kind(label: str) -> str:
    return label.split("/", 1)[0]


def test_stdlib_mixes_reference_docstrings_and_code_in_every_prefix(tiny_tokenizer):
    corpus = build_corpus(STDLIB, tiny_tokenizer, max_tokens=100 * L, excerpt_len=L)

    assert {_kind(label) for label in corpus.sources[:3]} == {"stdlib:reference", "stdlib:doc", "stdlib:code"}
    assert Counter(_kind(label) for label in corpus.sources) == {
        "stdlib:reference": 50,
        "stdlib:doc": 30,
        "stdlib:code": 20,
    }
    smaller = build_corpus(STDLIB, tiny_tokenizer, max_tokens=37 * L, excerpt_len=L)
    np.testing.assert_array_equal(smaller.token_ids, corpus.token_ids[:37])
    assert smaller.sources == corpus.sources[:37]


def test_stdlib_is_deterministic_and_seeded(tiny_tokenizer):
    first = build_corpus(STDLIB, tiny_tokenizer, max_tokens=30 * L, excerpt_len=L)
    again = build_corpus(STDLIB, tiny_tokenizer, max_tokens=30 * L, excerpt_len=L)
    other = build_corpus(STDLIB, tiny_tokenizer, max_tokens=30 * L, excerpt_len=L, seed=1)
    np.testing.assert_array_equal(first.token_ids, again.token_ids)
    assert first.sources == again.sources
    assert first.report == again.report
    assert first.sources != other.sources


def test_stdlib_100k_tokens_reads_few_files(tiny_tokenizer):
    corpus = build_corpus(STDLIB, tiny_tokenizer, max_tokens=100_000, excerpt_len=64)
    assert corpus.token_ids.shape == (100_000 // 64, 64)
    assert corpus.report.files_read < 300  # it stopped reading long before the end of the stdlib
    text = tiny_tokenizer.decode(corpus.token_ids[:3].reshape(-1))
    assert text.isprintable() or "\n" in text


def test_stdlib_with_a_real_tokenizer(default_model):
    tokenizer = default_model.tokenizer
    corpus = build_corpus(STDLIB, tokenizer, max_tokens=20 * 64)
    assert corpus.token_ids.shape == (20, 64)
    assert int(corpus.token_ids.max()) < len(tokenizer)
    bos = tokenizer.bos_token_id
    assert bos is None or bos not in corpus.token_ids[:, 0]  # no special tokens are added


# ---------------------------------------------------------------------------------------------------------
# Bad inputs


def test_nothing_usable_names_what_was_skipped(tmp_path, tiny_tokenizer):
    (tmp_path / "a.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "b.bin").write_bytes(b"abc\x00def")
    (tmp_path / "c.txt").write_bytes(b"")
    with pytest.raises(CorpusError) as caught:
        build_corpus(str(tmp_path), tiny_tokenizer, max_tokens=1000, excerpt_len=L)
    assert str(caught.value) == (f"no usable text in {tmp_path}: 3 files skipped (2 binary, 1 empty); give plain text "
                                 "saved as UTF-8 (.txt, .md, .py ...)")


def test_too_little_text_says_so(tmp_path, tiny_tokenizer):
    (tmp_path / "short.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(CorpusError, match="less than one excerpt of 64; add text or lower the excerpt length"):
        build_corpus(str(tmp_path / "short.txt"), tiny_tokenizer, max_tokens=1000, excerpt_len=64)


@pytest.mark.parametrize(
    ("max_tokens", "excerpt_len", "message"),
    [
        (10, 64, "less than one excerpt of 64 tokens"),
        (100, 1, "at least 2 tokens"),
        (100, 0, "at least 2 tokens"),
    ],
)
def test_bad_sizes(tiny_tokenizer, max_tokens, excerpt_len, message):
    with pytest.raises(CorpusError, match=message):
        build_corpus(STDLIB, tiny_tokenizer, max_tokens=max_tokens, excerpt_len=excerpt_len)


def test_missing_path(tmp_path, tiny_tokenizer):
    with pytest.raises(CorpusError, match=r"corpus source not found: .*nope\.txt"):
        build_corpus(str(tmp_path / "nope.txt"), tiny_tokenizer, max_tokens=1000)
