"""The one configuration object of a fine-tuning run, validated once and saved with every artefact.

:class:`FinetuneConfig` holds every choice :func:`embedlab.finetune.run.finetune` makes. Its defaults are the
recipe that measured best for MiniLM-L6 within 15 minutes of 2 CPU cores, chosen to be safe on any domain, not
tuned to one data set:

* **MNRL** (in-batch negatives), batch 32, learning rate 1e-4 with 10% warm-up, up to 3 epochs. In a sweep of
  29 recipes on SciFact, 1e-4 beat 2e-5 and 5e-5 whenever the training judgements carried signal (73.4 vs 68.9
  and 72.0 nDCG@10 after 3 epochs, test positives allowed), cost about a point of STSb without hard negatives and
  half a point with one, and tied under the leakage rule;
* **one mined hard negative per pair** from the base model's ranks 4–50, dropping candidates scoring above 95%
  of the positive (a 5% relative margin: likely unjudged relevant documents, i.e. false negatives). It added
  3.6 points over in-batch negatives alone (76.0–77.0 vs 73.4) and kept STSb closer to the base;
* **a dev split** (20% of the training queries, 20–100 queries) picks the best epoch — the base model's own dev
  score included, so a run that only hurts is reported as such — and decides whether the fine-tuned model is kept
  at all (a significant gain only). At 10%, stdlib-docs' 480 training queries gave 48 dev queries: dev 77.75 →
  83.11 was not significant (p = 0.10) and the base was kept, though the rejected model scored 82.26 against 74.46
  on the test queries; at 20% (96 dev queries, 384 training) the gain was significant (p = 0.0006) and the kept
  model scored 82.20. Data sets of 1,000 training queries or more reach the 100-query cap either way;
* **bfloat16 mixed precision only when a timed step says it is faster** on this CPU;
* **batches grouped by length** (in random order): less padding, so more steps in the budget — nl2bash same-source
  714 steps instead of 414 in 15 minutes (74.93 vs 74.20 nDCG@10), cross-source 616 instead of 341 (+3.84 vs
  +3.08), on a 2-core AMD EPYC;
* a **time budget** of 15 minutes of training: when the measured estimate exceeds it, fewer steps are run.

Unknown fields are refused (``extra="forbid"``), so a typo in a saved config fails loudly. Example configs are
short diffs over the defaults::

    >>> config = FinetuneConfig(base="minilm-l6", loss="cached-mnrl", batch_size=128)
    >>> config.model_dump()["hard_negatives"]
    1
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from embedlab.errors import EmbedlabError

Miner = Literal["model", "bm25"]
Precision = Literal["auto", "fp32", "bf16"]
PseudoQueryKind = Literal["title", "cloze", "keywords", "api-docs"]
TrainQueries = Literal["auto", "judged", "corpus", "both"]


class FinetuneConfig(BaseModel):
    """Every setting of a fine-tuning run (see the module docstring for the defaults' reasons)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str = "minilm-l6"
    loss: str = "mnrl"
    matryoshka_dims: tuple[int, ...] = ()
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, ge=2)
    mini_batch_size: int = Field(16, ge=1, description="cached-mnrl: texts per forward pass (GradCache)")
    learning_rate: float = Field(1e-4, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_seq_length: int | None = Field(
        None,
        ge=8,
        description="tokens per text in training (unset: the 99.9th percentile of each text column's lengths, "
        "rounded up to 64, at most the base length); the saved model keeps the base length",
    )
    seed: int = 0

    # Data and splits
    train_split: str = "train"
    test_split: str = "test"
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held out when the data has no separate test split")
    dev_fraction: float = Field(0.2, ge=0, lt=1)
    dev_min: int = Field(20, ge=0)
    dev_max: int = Field(100, ge=0)
    dev_pool: int = Field(10, ge=1, description="base-model candidates per dev query in the dev corpus")
    allow_test_positives: bool = False
    duplicate_judgements: Literal["error", "last", "max"] = Field(
        "error", description="a (query, document) judged twice: refuse, keep the last or the highest grade"
    )
    # api-docs makes nothing for text that is not Python (none of SciFact's abstracts or nl2bash's commands), and
    # for code it is the nearest to a person's question: CoNaLa cross-source (teacher mpnet-base) +1.48 nDCG@10
    # with keyword queries alone, +3.76 (95% CI +2.16 … +5.41) with docstring questions beside them.
    pseudo_queries: tuple[PseudoQueryKind, ...] = ("title", "cloze", "keywords", "api-docs")
    # 20,000 is about what 15 minutes of 2 CPU cores train on in one epoch. A lower cap leaves documents without a
    # query, and the budget, not the cap, bounds the training time: nl2bash cross-source (10,624 commands,
    # teacher mpnet-base) gained +2.40 nDCG@10 with 5,000 keyword queries and 206 steps, +3.30 with 10,052 and 308.
    pseudo_max: int = Field(20000, ge=1, description="documents per pseudo-query kind, at most")
    train_queries: TrainQueries = Field(
        "auto",
        description="judged: the training judgements; corpus: only queries made from the corpus (needs a teacher); "
        "both; auto: judged, plus corpus queries when a teacher is given (corpus when nothing is judged)",
    )

    # Teacher (GPL-style distillation with MarginMSE; see embedlab.finetune.teacher)
    teacher: str | None = None
    teacher_negatives: int = Field(2, ge=1, description="negatives per corpus query, each with the teacher's margin")
    teacher_learning_rate: float = Field(
        2e-5, gt=0, description="peak learning rate when only teacher-labelled corpus queries train"
    )
    teacher_window: tuple[int, int] = (3, 50)
    teacher_in_batch: bool = Field(
        False,
        description="corpus queries learn the teacher's margin against every document of the batch (the other rows' "
        "positives and negatives too), scored on the fly, not only against their own negatives: more teacher "
        "comparisons per step for the same encoding (embedlab.finetune.in_batch); dense, bm25 or hybrid teachers",
    )
    dev_alpha: float = Field(
        0.05, gt=0, lt=1, description="the fine-tuned model is kept only when its dev gain is significant at this level"
    )
    dev_corpus_max: int = Field(300, ge=0, description="dev queries, at most, when only corpus queries train")
    llm_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_max: int = Field(200, ge=1)

    # Hard negatives
    hard_negatives: int = Field(1, ge=0)
    miner: Miner = "model"
    rank_window: tuple[int, int] = (3, 50)
    relative_margin: float = Field(0.05, ge=0, lt=1)
    max_negative_score: float | None = None

    # Machine
    precision: Precision = "auto"
    batch_order: Literal["length", "random"] = Field(
        "length",
        description="length: batches of rows of similar length, in random order (less padding, faster steps; "
        "embedlab.finetune.batches); random: rows shuffled",
    )
    time_budget_minutes: float | None = Field(15.0, gt=0)
    threads: int | None = Field(None, ge=1)
    checkpoint_steps: int | None = Field(None, ge=1, description="None: one checkpoint per epoch")

    # Evaluation
    k_values: tuple[int, ...] = (1, 3, 10, 100)
    guard_drop_points: float = Field(2.0, ge=0)

    # Query-side distillation (embedlab.finetune.query_side): documents keep the base model's vectors
    train_side: Literal["both", "query"] = Field(
        "both",
        description="both: the whole model learns (queries and documents re-encoded); query: only the query "
        "encoder learns the teacher's ranking of each query's candidates, documents keep the base vectors "
        "(an index built with the base stays valid; needs a teacher)",
    )
    query_side_epochs: float = Field(1.0, gt=0)
    query_side_learning_rate: float = Field(2e-5, gt=0)
    query_side_depth: int = Field(50, ge=2, description="base-model candidates per training query")
    query_side_tau: float = Field(0.05, gt=0, description="temperature of the teacher's distribution")
    query_side_eval_steps: int = Field(100, ge=1, description="steps between dev evaluations")

    # Linear adapter instead of full fine-tuning
    adapter: bool = False
    adapter_epochs: int = Field(30, ge=1)
    adapter_learning_rate: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        low, high = self.rank_window
        if not 0 <= low < high:
            raise ValueError(f"rank_window must be (low, high) with 0 <= low < high, got {self.rank_window}")
        if self.train_side == "query" and not self.teacher:
            raise ValueError("train_side 'query' needs a teacher (e.g. --teacher hybrid:mpnet-base)")
        if self.train_side == "query" and self.adapter:
            raise ValueError("train_side 'query' and adapter exclude each other: choose one")
        if self.train_queries == "corpus" and not self.teacher:
            raise ValueError("train_queries 'corpus' needs a teacher (e.g. --teacher hybrid:mpnet-base)")
        if not 0 <= self.teacher_window[0] < self.teacher_window[1]:
            raise ValueError(f"teacher_window must be (low, high) with 0 <= low < high, got {self.teacher_window}")
        if self.dev_min > self.dev_max:
            raise ValueError("dev_min must not exceed dev_max")
        if any(d < 1 for d in self.matryoshka_dims):
            raise ValueError("matryoshka_dims must be positive")
        if not self.k_values or min(self.k_values) < 1:
            raise ValueError("k_values must be positive cut-offs")
        return self

    @classmethod
    def create(cls, **settings: Any) -> FinetuneConfig:
        """Validate ``settings``; a bad value is an :class:`EmbedlabError` naming the field, not a traceback."""
        try:
            return cls(**settings)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}" for error in exc.errors()
            )
            raise EmbedlabError(f"invalid fine-tuning settings: {problems}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def fingerprint(self) -> str:
        """A short hash of the settings that change the trained model (resume refuses a different one)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
