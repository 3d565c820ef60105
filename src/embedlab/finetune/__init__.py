"""Fine-tuning: adapt a model to a domain and prove the gain on held-out queries (``embedlab finetune``).

Modules, in pipeline order: :mod:`~embedlab.finetune.config` (the one validated config),
:mod:`~embedlab.finetune.pairs` (training examples), :mod:`~embedlab.finetune.splits` (split rules, leakage
report), :mod:`~embedlab.finetune.negatives` (hard-negative mining), :mod:`~embedlab.finetune.losses` (the loss
registry), :mod:`~embedlab.finetune.train` (full fine-tuning), :mod:`~embedlab.finetune.adapter` (linear
adapter), :mod:`~embedlab.finetune.card` (model card) and :mod:`~embedlab.finetune.run` (the pipeline).

Example::

    >>> from embedlab.finetune.config import FinetuneConfig
    >>> from embedlab.finetune.run import finetune
    >>> result = finetune("../shared/data/scifact", config=FinetuneConfig(), out=Path("runs/ft"))  # doctest: +SKIP
"""
