"""The command line: build/info on real caches, and one clear line (no traceback) for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=ROOT)


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


def test_build_on_a_tiny_model_then_again_is_a_no_op(tiny_model_folder, tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(" ".join(f"the cat number {i} sat on the mat." for i in range(200)))
    cache = tmp_path / "tiny.duckdb"
    args = ("build", "--model", str(tiny_model_folder("qwen2")), "--corpus", str(corpus), "--tokens", "640",
            "--excerpt-len", "16", "--cache", str(cache), "--quiet")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "recorded 2 layers x 48 neurons" in first.stdout
    again = run_cli(*args)
    assert again.returncode == 0 and "already built" in again.stdout


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
