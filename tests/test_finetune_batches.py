"""Length-grouped training batches on real nl2bash pairs with the packaged MiniLM tokenizer."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedlab.finetune.batches import LengthGroupedBatchSampler, batch_tokens, token_lengths, training_length
from embedlab.finetune.train import base_model_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nl2bash_pairs(shared_data: Path) -> dict[str, list[str]]:
    """Training (description, command) pairs of nl2bash; a command judged for several descriptions repeats."""
    folder = shared_data / "nl2bash"
    queries = {r["_id"]: r["text"] for r in map(json.loads, (folder / "queries.jsonl").open())}
    commands = {r["_id"]: r["text"] for r in map(json.loads, (folder / "corpus.jsonl").open())}
    with (folder / "qrels" / "train.tsv").open() as handle:
        rows = [(queries[r["query-id"]], commands[r["corpus-id"]]) for r in csv.DictReader(handle, delimiter="\t")]
    rows = rows[:3000]
    return {"anchor": [q for q, _ in rows], "positive": [c for _, c in rows]}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_path("minilm-l6"))


def _sampler(
    columns: dict[str, list[str]], tokenizer: Any, *, unique: bool, seed: int = 0
) -> LengthGroupedBatchSampler:
    from datasets import Dataset

    return LengthGroupedBatchSampler(
        Dataset.from_dict(columns), 32, False, seed=seed, tokenizer=tokenizer, max_length=256, unique=unique
    )


def test_length_grouped_batches_pad_less_and_cover_every_row_once(
    nl2bash_pairs: dict[str, list[str]], tokenizer: Any
) -> None:
    sampler = _sampler(nl2bash_pairs, tokenizer, unique=True)
    batches = sampler.batches()
    rows = len(nl2bash_pairs["anchor"])
    assert sorted(i for batch in batches for i in batch) == list(range(rows))
    assert len(batches) == len(sampler)  # a few repeated commands fit in other batches
    for batch in batches:
        texts = [nl2bash_pairs[column][i] for i in batch for column in ("anchor", "positive")]
        assert len(texts) == len(set(texts)), "a text twice in one batch would be its own in-batch negative"

    shuffled = np.random.default_rng(0).permutation(rows)
    random_batches = [shuffled[i : i + 32].tolist() for i in range(0, rows, 32)]
    assert batch_tokens(sampler.lengths, batches).mean() < 0.75 * batch_tokens(sampler.lengths, random_batches).mean()


def test_length_grouped_batches_are_seeded_by_epoch(nl2bash_pairs: dict[str, list[str]], tokenizer: Any) -> None:
    sampler = _sampler(nl2bash_pairs, tokenizer, unique=True)
    first = sampler.batches()
    assert _sampler(nl2bash_pairs, tokenizer, unique=True).batches() == first  # a resumed run replays them
    sampler.set_epoch(1)
    assert sampler.batches() != first
    assert list(sampler) == sampler.batches()


def test_repeated_texts_wait_for_another_batch(tokenizer: Any) -> None:
    """Forty rows share one positive: with ``unique`` each goes to its own batch, none is lost."""
    columns = {
        "anchor": [f"list the files of folder number {i}" for i in range(40)] + [f"q{i}" for i in range(60)],
        "positive": ["ls -la"] * 40 + [f"echo {i}" for i in range(60)],
    }
    batches = _sampler(columns, tokenizer, unique=True).batches()
    assert sorted(i for batch in batches for i in batch) == list(range(100))
    assert all(sum(1 for i in batch if i < 40) <= 1 for batch in batches)
    plain = _sampler(columns, tokenizer, unique=False).batches()
    assert any(sum(1 for i in batch if i < 40) > 1 for batch in plain)


def test_training_length_cuts_only_the_longest_thousandth(
    nl2bash_pairs: dict[str, list[str]], tokenizer: Any, shared_data: Path
) -> None:
    """nl2bash: a few very long commands, cut; SciFact: abstracts fill MiniLM's 256 tokens, kept whole."""
    columns = [nl2bash_pairs["anchor"], nl2bash_pairs["positive"]]
    cap, longer = training_length(tokenizer, columns, 256)
    lengths = np.concatenate([token_lengths(tokenizer, texts, 256) for texts in columns])
    assert cap < 256 and cap % 64 == 0
    assert longer == int((lengths > cap).sum()) and 0 < longer <= 0.001 * len(lengths)
    assert (lengths > cap - 64).sum() > 0.001 * len(lengths)  # the smallest multiple of 64 that fits 99.9%

    abstracts = [json.loads(line)["text"] for line in (shared_data / "scifact" / "corpus.jsonl").open()][:400]
    assert training_length(tokenizer, [abstracts], 256) == (256, 0)
