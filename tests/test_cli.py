"""The command line: build/info on real caches, and one clear line (no traceback) for every bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.paths import temp_path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, max_file_bytes: int | None = None
            ) -> subprocess.CompletedProcess:
    """`python -m core ARGS`; with `max_file_bytes`, no file it writes may grow past that (RLIMIT_FSIZE: the kernel
    refuses the write as it does on a full disk, EFBIG instead of ENOSPC, without a disk of its own for the test)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}

    def limit() -> None:  # in the child only
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=ROOT, preexec_fn=limit if max_file_bytes is not None else None)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:") or "error:" in line]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


def test_info_json_counts(small_cache):
    result = run_cli("info", str(small_cache), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["model"] == "smollm2-135m"
    assert info["layers"] == 30 and info["neurons_per_layer"] == 1536
    assert info["neurons_recorded"] == 46080
    assert info["tokens"] == info["excerpts"] * 64 == 4096
    for key in ("explanations", "scores", "corpus", "architecture"):
        assert key in info
    human = run_cli("info", str(small_cache))
    assert "46,080 of 46,080 recorded" in human.stdout


def tiny_build(tiny_model_folder, folder: Path) -> tuple[Path, tuple[str, ...]]:
    """A small text in `folder` and the arguments of a quick build of a tiny model over it: (cache, args)."""
    corpus = folder / "text.txt"
    corpus.write_text(" ".join(f"the cat number {i} sat on the mat." for i in range(200)))
    cache = folder / "tiny.duckdb"
    return cache, ("build", "--model", str(tiny_model_folder("qwen2")), "--corpus", str(corpus), "--tokens", "640",
                   "--excerpt-len", "16", "--cache", str(cache), "--quiet")


def test_build_on_a_tiny_model_then_again_is_a_no_op(tiny_model_folder, tmp_path):
    cache, args = tiny_build(tiny_model_folder, tmp_path)
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "recorded 2 layers x 48 neurons" in first.stdout and cache.exists()
    again = run_cli(*args)
    assert again.returncode == 0 and "already built" in again.stdout


def test_a_second_build_of_the_same_cache_is_one_line_naming_the_first(tiny_model_folder, tmp_path):
    from core.paths import build_lock_path
    from core.store.publish import FileLock

    cache, args = tiny_build(tiny_model_folder, tmp_path)
    held = FileLock(build_lock_path(cache), busy=lambda holder: holder, unwritable=str)  # as a running build holds it
    try:
        before = folder_digest(tmp_path)
        second = run_cli(*args)
        assert_one_line_error(second, f"another build of {cache} is running (process {os.getpid()})",
                              "wait until it finishes")
        assert folder_digest(tmp_path) == before  # nothing begun beside the running build's files
    finally:
        held.release()
    after = run_cli(*args)  # once the first is done, a build goes ahead
    assert after.returncode == 0, after.stderr
    assert "recorded 2 layers x 48 neurons" in after.stdout and not build_lock_path(cache).exists()


def test_a_build_that_finds_no_room_is_one_line_and_leaves_no_half_written_file(tiny_model_folder, tmp_path):
    cache, args = tiny_build(tiny_model_folder, tmp_path)
    full = run_cli(*args, max_file_bytes=200_000)
    assert_one_line_error(full, "no room left on the disk to write", "free some space", "run the same command again")
    assert not cache.exists() and not temp_path(cache).exists() and not Path(f"{temp_path(cache)}.wal").exists()
    again = run_cli(*args)  # with room again, the same command finishes the build
    assert again.returncode == 0, again.stderr
    assert "recorded 2 layers x 48 neurons" in again.stdout and cache.exists()


def test_an_explain_that_finds_no_room_is_one_line_and_changes_nothing(explained_tiny_cache, tmp_path):
    from core.paths import copy_cache, results_path

    cache = tmp_path / "tiny.duckdb"
    copy_cache(explained_tiny_cache, cache)
    before = folder_digest(tmp_path)
    args = ("explain", str(cache), "--neurons", "1:0-5", "--quiet")
    # room for the recording's reads, none for a copy of the results to work on
    full = run_cli(*args, max_file_bytes=results_path(cache).stat().st_size // 2)
    assert_one_line_error(full, "no room left on the disk to write", ".results.duckdb", "run the same command again")
    assert folder_digest(tmp_path) == before  # the cut copy removed, the published results untouched
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("build", "--model", "no-such-org/no-such-model", "--tokens", "100"), ("no-such-org/no-such-model",)),
        (("build", "--model", "/nonexistent/folder", "--tokens", "100"), ("/nonexistent/folder",)),
        (("build", "--corpus", "/nonexistent/text.txt", "--tokens", "100"), ("/nonexistent/text.txt",)),
        (("info", "/nonexistent/cache.duckdb"), ("no cache at",)),
        (("build", "--tokens", "100", "--workers", "2"), ("--workers needs --ray",)),
    ],
)
def test_bad_input_gets_one_clear_line(args, fragments, tmp_path):
    result = run_cli(*args, "--cache", str(tmp_path / "c.duckdb")) if args[0] == "build" else run_cli(*args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "c.duckdb").exists()


@pytest.mark.parametrize("tokens", ["0", "-5", "ten", "3000000000"])
def test_out_of_range_tokens(tokens):
    result = run_cli("build", "--tokens", tokens)
    assert result.returncode == 2
    assert "--tokens" in result.stderr and "Traceback" not in result.stderr


def test_unsupported_architecture(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                               vocab_size=50)).save_pretrained(folder)
    result = run_cli("build", "--model", str(folder), "--tokens", "100", "--cache", str(tmp_path / "c.duckdb"))
    assert_one_line_error(result, "not")


def test_a_file_that_is_not_a_cache(tmp_path):
    bogus = tmp_path / "bogus.duckdb"
    bogus.write_bytes(b"not a database at all" * 100)
    result = run_cli("info", str(bogus))
    assert_one_line_error(result)


def test_corpus_with_nothing_usable(tmp_path, tiny_model_folder):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"\x00\x01\x02" * 100)
    (folder / "b.txt").write_text("")
    result = run_cli("build", "--model", str(tiny_model_folder("gpt2")), "--corpus", str(folder), "--tokens", "100",
                     "--cache", str(tmp_path / "c.duckdb"))
    assert_one_line_error(result, "no usable text")
    assert not (tmp_path / "c.duckdb").exists()


# --- bad input on a real cache: one line that says what to do, and nothing lost --------------------------------------

LONG = "x" * 10_000
BAD_ON_A_CACHE: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    # (arguments, with CACHE for the cache's path; fragments of the one error line)
    (("show", "CACHE", "--neuron", "99:0"), ("out of range", "layers 0-1")),
    (("show", "CACHE", "--neuron", "0:999"), ("out of range", "neurons 0-47")),
    (("show", "CACHE", "--neuron=-1:3"), ("not a neuron", "LAYER:NEURON")),
    (("show", "CACHE", "--neuron", "x:y"), ("not a neuron", "for example 3:42")),
    (("explain", "CACHE", "--neurons", "0:10-5"), ("empty range", "0:5-10")),
    (("explain", "CACHE", "--neurons", "5"), ("cannot read '5'", "LAYER:FIRST-LAST")),
    (("explain", "CACHE", "--neurons", "7:0-3"), ("out of range", "layers 0-1")),
    (("explain", "CACHE", "--neurons", "0:0", "--explainer", "nosuch"), ("unknown explainer", "use baseline")),
    (("explain", "CACHE", "--neurons", "0:0", "--explainer", "openai:gpt-4o-mini", "--processes", "2"),
     ("--processes is for the offline default", "--concurrency")),
    (("score", "CACHE", "--neurons", "0:1", "--explanation", "   "), ("explanation is empty", "write what")),
    (("score", "CACHE", "--neurons", "0:1", "--explanation", LONG), ("10,000 characters", "shorten it")),
    (("score", "CACHE", "--neurons", "0:1", "--explanation", "'a' 'b' 'c' 'd' 'e' 'f'"),
     ("quotes 6 tokens", "name what they share")),
    (("show", "NOT_DUCKDB", "--neuron", "0:0"), ("not a DuckDB file", "build it again")),
    (("explain", "NOT_DUCKDB", "--neurons", "0:0"), ("not a DuckDB file", "build it again")),
    (("show", "V1", "--neuron", "0:0"), ("schema version 1", "python -m core migrate")),
]
"""Bad input to the commands that read or write an existing cache (tests/conftest.py: tiny_cache, explained)."""


@pytest.fixture(scope="module")
def explained_tiny_cache(tiny_cache, tmp_path_factory) -> Path:
    """The tiny cache with published results (two neurons explained), so a refused command has something to lose."""
    from core.cli.main import main
    from core.paths import copy_cache

    path = tmp_path_factory.mktemp("bad-input") / "tiny.duckdb"
    copy_cache(tiny_cache, path)
    assert main(["explain", str(path), "--neurons", "0:0-1", "--quiet"]) == 0
    return path


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize(("args", "fragments"), BAD_ON_A_CACHE, ids=[" ".join(a)[:40] for a, _ in BAD_ON_A_CACHE])
def test_bad_input_on_a_cache_is_one_line_and_loses_nothing(args, fragments, explained_tiny_cache, tmp_path):
    import tarfile

    from core.paths import copy_cache

    cache = tmp_path / "tiny.duckdb"
    copy_cache(explained_tiny_cache, cache)
    (tmp_path / "bogus.duckdb").write_bytes(b"not a database at all" * 100)
    with tarfile.open(ROOT / "tests" / "data" / "v1-cache.tgz") as archive:
        archive.extractall(tmp_path, filter="data")
    paths = {"CACHE": cache, "NOT_DUCKDB": tmp_path / "bogus.duckdb", "V1": tmp_path / "v1.duckdb"}
    before = folder_digest(tmp_path)
    result = run_cli(*(str(paths.get(a, a)) for a in args))
    assert_one_line_error(result, *fragments)
    assert folder_digest(tmp_path) == before  # nothing written, nothing removed, no working copy left behind


def test_a_second_writer_of_the_same_cache_is_one_line_naming_the_first(explained_tiny_cache, tmp_path):
    from core.paths import copy_cache
    from core.store.publish import ResultsFiles, WriterLock

    cache = tmp_path / "tiny.duckdb"
    copy_cache(explained_tiny_cache, cache)
    before = folder_digest(tmp_path)
    held = WriterLock(ResultsFiles.of(cache), cache)  # as a running `explain` holds it
    try:
        result = run_cli("explain", str(cache), "--neurons", "0:2", "--quiet")
    finally:
        held.release()
    assert_one_line_error(result, f"(process {os.getpid()}) is writing", "wait until it finishes")
    assert folder_digest(tmp_path) == before


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"", ("1 empty", "UTF-8")),
        (bytes(range(256)) * 40, ("1 binary", "UTF-8")),
        ("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, d\u00e9j\u00e0 vu. ".encode("latin-1") * 50, ("not UTF-8", "UTF-8")),
    ],
    ids=["empty", "binary", "latin-1"],
)
def test_a_corpus_file_without_usable_text_is_one_line(content, fragments, tiny_model_folder, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    result = run_cli("build", "--model", str(tiny_model_folder("gpt2")), "--corpus", str(corpus), "--tokens", "100",
                     "--cache", str(tmp_path / "c.duckdb"))
    assert_one_line_error(result, "no usable text", *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]  # no cache, no partial build


def test_an_explanation_of_html_markdown_and_sql_is_stored_as_it_is(explained_tiny_cache, tmp_path):
    """Not refused (it breaks no readability rule) and not interpreted: the text comes back byte for byte."""
    from core.paths import copy_cache
    from core.store import open_reader
    from core.types import NeuronId

    text = "<b>'x'</b> ![t](http://a.example/t.png) '); DROP TABLE scores; --"
    cache = tmp_path / "tiny.duckdb"
    copy_cache(explained_tiny_cache, cache)
    result = run_cli("score", str(cache), "--neurons", "0:1", "--explanation", text)
    assert result.returncode == 0, result.stderr
    with open_reader(cache) as reader:
        assert text in [r.text for r in reader.explanations(NeuronId(0, 1))]
        assert reader.info().scores >= 3  # the scores table is still there, with the earlier runs' rows
