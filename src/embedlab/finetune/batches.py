"""Training batches of texts of similar length: a step costs what its longest texts cost.

Each text column of a batch is padded to its longest text, and text lengths are heavy-tailed: nl2bash's 8,823
training pairs hold 45 tokens a row on average, but a random batch of 32 pads them to 117. Taking shuffled rows in
mega-batches of 50 batches, sorting each by length and cutting it into batches (transformers'
``get_length_grouped_indices``, the "group by length" of its Trainer, which sentence-transformers' batch samplers
do not offer) pads them to 68: a forward and backward pass of MiniLM-L6 on 32 pairs took 0.63 s instead of 1.08 s
in bfloat16 on an AMD EPYC (Zen 4, avx512_bf16, 2 cores) — more steps in the same time budget. The order of the
mega-batches stays random, so every batch still draws its in-batch negatives from the whole data set's
neighbourhood of one length.

Losses with in-batch negatives also need that no text appears twice in a batch (another row's copy of a positive
would be scored as a negative), the rule of sentence-transformers' ``NoDuplicatesBatchSampler``: a row that
repeats a text of the batch being filled waits for the next batch, which is of about the same length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from sentence_transformers.base.sampler import DefaultBatchSampler


def text_columns(columns: Mapping[str, Sequence[Any]]) -> list[str]:
    """The columns that are texts (a loss's score or label column is not padded)."""
    return [name for name, values in columns.items() if values and isinstance(values[0], str)]


def token_lengths(tokenizer: Any, texts: Sequence[str], max_length: int | None) -> np.ndarray:
    """Tokens of each text after truncation to ``max_length``; each distinct text is tokenised once."""
    distinct = list(dict.fromkeys(texts))
    counts = {
        text: len(ids)
        for text, ids in zip(
            distinct, tokenizer(distinct, truncation=True, max_length=max_length)["input_ids"], strict=True
        )
    }
    return np.array([counts[text] for text in texts], dtype=np.int64)


def training_length(
    tokenizer: Any,
    columns: Sequence[Sequence[str]],
    max_length: int,
    *,
    quantile: float = 0.999,
    multiple: int = 64,
) -> tuple[int, int]:
    """Tokens a text to train at, and how many texts are longer: the ``quantile`` of the lengths of all texts
    in ``columns``, rounded up to a ``multiple`` and at most ``max_length``.

    A step's time grows faster than its padded tokens at the top end: on nl2bash one batch padded to 610 tokens
    (the 8 commands of 10,624 longer than 128 tokens) took 23 s where batches of 50–260 tokens take 0.4–1.9 s
    (AMD EPYC, 2 cores). Truncated to 128 tokens in training only (inference keeps the base length), a
    fifteen-minute run finished all 804 planned steps instead of 714 and scored 75.46 nDCG@10 instead of 74.93.
    All columns pooled: the mined negatives are the longest column (long commands are near many queries), and its
    own 99.9th percentile (nl2bash: 192 tokens) would keep most of the costly batches. SciFact's abstracts mostly
    fill MiniLM's 256 tokens, so they keep them.
    """
    lengths = np.concatenate([token_lengths(tokenizer, texts, max_length) for texts in columns])
    longest = int(np.ceil(np.quantile(lengths, quantile)))
    cap = min(max_length, multiple * math.ceil(longest / multiple))
    return cap, int((lengths > cap).sum())


def batch_tokens(lengths: np.ndarray, batches: Sequence[Sequence[int]]) -> np.ndarray:
    """Padded tokens of each batch: every text column padded to its longest text in the batch, summed.

    ``lengths`` is (rows, text columns), as :func:`token_lengths` gives each column.
    """
    return np.array([lengths[list(batch)].max(axis=0).sum() for batch in batches], dtype=float)


class LengthGroupedBatchSampler(DefaultBatchSampler):
    """Batches of similar length in random order; with ``unique``, no text twice in a batch.

    Built by the trainer with its own arguments; ``tokenizer`` and ``max_length`` are bound with
    :func:`functools.partial`, so each data set of a multi-loss run is measured on its own texts.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: Any = None,
        seed: int = 0,
        *,
        tokenizer: Any,
        max_length: int | None,
        unique: bool,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        columns = {name: dataset[name] for name in dataset.column_names}
        texts = text_columns(columns)
        self.lengths = np.stack([token_lengths(tokenizer, columns[name], max_length) for name in texts], axis=1)
        self.row_texts = (
            [frozenset(row) for row in zip(*(columns[name] for name in texts), strict=True)] if unique else None
        )

    def batches(self) -> list[list[int]]:
        """This epoch's batches (seeded by ``seed`` and the epoch, so a resumed run replays them)."""
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = self.generator if self.generator is not None else torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        # a row's length is the sum of its columns': that is what its padding costs
        order = [
            int(i)
            for i in get_length_grouped_indices(self.lengths.sum(axis=1).tolist(), self.batch_size, generator=generator)
        ]
        if self.row_texts is None:
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        else:
            batches = []
            remaining = order
            while remaining:
                batch: list[int] = []
                seen: set[str] = set()
                deferred: list[int] = []
                for position, index in enumerate(remaining):
                    if len(batch) == self.batch_size:
                        deferred.extend(remaining[position:])
                        break
                    if self.row_texts[index] & seen:
                        deferred.append(index)
                        continue
                    batch.append(index)
                    seen |= self.row_texts[index]
                batches.append(batch)
                remaining = deferred
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        rows = len(self.lengths)
        return rows // self.batch_size if self.drop_last else math.ceil(rows / self.batch_size)
