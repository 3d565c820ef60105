"""In-batch teacher distillation: MarginMSE against every document of the batch (``--teacher-in-batch``).

With a teacher, each corpus query trains as a row (query, positive, negative_1..k) and sentence-transformers'
MarginMSELoss asks the student's cosine margins ``s(q, p) − s(q, n_i)`` to equal the teacher's (scaled)
``t(q, p) − t(q, n_i)``: k comparisons per query. But a step already encodes B queries and B·(1+k) documents,
and on a small CPU training is bound by that encoding (SciFact, MiniLM, 2 cores: about 18 s a step of 32 rows
of 4 long texts, so a 15-minute budget runs a few dozen steps). TAS-B (Hofstätter et al., SIGIR 2021) distils
the teacher's margins over the other rows' documents too: here every query is compared with *every* document of
the batch — B·(1+k) − 1 margins (95 at B = 32, k = 2) instead of k — for no extra encoding. The teacher's scores
of the new pairs are computed at each step through its ``score(queries, rows)``: a dot product with cached
vectors for a dense teacher (the training queries are encoded once, before training), one BM25 scoring per
query for ``bm25``. A CrossEncoder teacher would need a forward pass per pair and is refused.

For row ``i`` with query ``q_i`` and positive ``p_i``, and ``d_j`` each document of the batch (every row's
positive and negatives), the loss is the mean over all ``(i, j)`` with ``d_j ≠ p_i`` (the row's own positive
column) of::

    ((s(q_i, p_i) − s(q_i, d_j)) − scale · (t(q_i, p_i) − t(q_i, d_j)))²

with ``s`` the student's cosine and ``scale`` the factor :func:`~embedlab.finetune.teacher.label_triples`
measured to put the teacher's margins on the student's scale. With one row it is MarginMSE on that row's own
negatives. Another row's positive that is relevant to ``q_i`` gets a margin near zero from the teacher, so it is
not pushed away (unlike MNRL's in-batch negatives).

Measured once (CoNaLa cross-source, teacher mpnet-base, 216 steps): 67.33 nDCG@10 against plain MarginMSE's
67.54 (base 66.06): the extra comparisons did not help there, so it is opt-in.

Example::

    >>> part = in_batch_part(triples, teacher)      # embedlab.finetune.teacher; doctest: +SKIP
    >>> loss = part.make(model)                     # an InBatchMarginMSELoss                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray
from sentence_transformers.sentence_transformer.losses import MarginMSELoss
from sentence_transformers.util import cos_sim, pairwise_cos_sim
from torch import Tensor

from embedlab.errors import EmbedlabError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedlab.finetune.teacher import Teacher


class InBatchMarginMSELoss(MarginMSELoss):
    """MarginMSE (cosine) of each query against every document of the batch; see the module docstring.

    ``queries[i]`` and ``rows[i]`` (corpus indices of the positive, then of each negative) belong to example
    ``i``; the data set's label column holds each row's ``i``. Inputs: (query, positive, negative_1..k) columns.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        *,
        teacher: Teacher,
        queries: Sequence[str],
        rows: NDArray[np.int64],
        scale: float,
    ) -> None:
        super().__init__(model, similarity_fct=pairwise_cos_sim)
        if len(queries) != len(rows):
            raise EmbedlabError(f"in-batch distillation: {len(queries)} queries but {len(rows)} rows of documents")
        self.teacher = teacher
        self.queries = list(queries)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.scale = float(scale)

    def teacher_margins(self, ids: Sequence[int]) -> NDArray[np.float32]:
        """``scale · (t(q_i, p_i) − t(q_i, d_j))`` for the examples ``ids`` of a batch, shape (B, B·(1+k)).

        Columns are in the loss's document order: the B positives, then the B first negatives, and so on.
        """
        rows = self.rows[np.asarray(ids, dtype=np.int64)]
        documents = rows.T.reshape(-1)
        scores = self.teacher.score(
            [self.queries[i] for i in ids], np.ascontiguousarray(np.broadcast_to(documents, (len(ids), documents.size)))
        )
        own = scores[np.arange(len(ids)), np.arange(len(ids))]
        return (self.scale * (own[:, None] - scores)).astype(np.float32)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        if len(embeddings) - 1 != self.rows.shape[1]:
            raise EmbedlabError(
                f"in-batch distillation: {len(embeddings) - 1} document columns but {self.rows.shape[1]} corpus "
                "rows per example"
            )
        # Scores in float32 even under bf16 autocast: margins are differences of nearby cosines.
        query = embeddings[0].float()
        documents = torch.cat([e.float() for e in embeddings[1:]])
        size = query.shape[0]
        student = cos_sim(query, documents)
        own = torch.arange(size, device=student.device)
        student_margins = student[own, own].unsqueeze(1) - student
        ids = [int(i) for i in labels.reshape(-1).tolist()]
        teacher = torch.from_numpy(self.teacher_margins(ids)).to(student.device)
        keep = torch.ones_like(student, dtype=torch.bool)
        keep[own, own] = False  # the row's own positive: both margins are 0 there by definition
        return self.loss_fct(student_margins[keep], teacher[keep])
