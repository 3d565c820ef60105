"""Full fine-tuning with sentence-transformers' ``SentenceTransformerTrainer``, made safe on a small CPU.

:func:`train_model` does, in order:

1. loads the base model (a catalog name, a local folder or a hub id) and the loss from
   :mod:`embedlab.finetune.losses`; batches hold rows of similar length (:mod:`embedlab.finetune.batches`),
   with no text twice in a batch for in-batch-negative losses;
2. **measures** a training step in float32 and in bfloat16 mixed precision on real batches of the run, short to
   long (forward and backward, no optimiser step, so the model is unchanged; :func:`measure_step_seconds`), and
   trains in bfloat16 only if it was faster here — CPUs differ (AVX-512 BF16 helps, no AMX does not), so it is
   detected, not assumed;
3. scores the base model on the dev split (which also times one evaluation), **prints the estimated time**, and
   when it exceeds the time budget, runs fewer steps (and says so);
4. trains with checkpoints in ``<work>/checkpoints`` (evaluated on the dev split at each one); an interrupted
   run given the same work folder and settings **resumes from its last checkpoint**;
5. keeps the checkpoint with the best dev nDCG@10 — the base model counts as a candidate, so a run that only
   hurt on dev saves the base unchanged and says so — and saves it as a standard sentence-transformers folder.

Example::

    >>> outcome = train_model(config, data, dev=dev_set, work_dir=Path("runs/ft/work"),
    ...                       model_dir=Path("runs/ft/model"))           # doctest: +SKIP
    >>> outcome.precision, outcome.steps                                  # doctest: +SKIP
    ('bf16', 81)
"""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.errors import EmbedlabError, ModelError
from embedlab.files import write_json_atomic
from embedlab.finetune.config import FinetuneConfig
from embedlab.finetune.losses import LossData, LossPart, build_loss, get_loss

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from transformers import TrainerCallback

Echo = Callable[[str], None]
DEV_METRIC = "eval_dev_cosine_ndcg@10"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class DevSet:
    """Dev queries, a small dev corpus (their relevant documents plus base-model candidates) and judgements."""

    queries: Mapping[str, str]
    corpus: Mapping[str, str]
    relevant: Mapping[str, frozenset[str]]

    def __bool__(self) -> bool:
        return bool(self.queries)


@dataclass
class TrainOutcome:
    """What training did: precision chosen and why, steps, time, dev scores and the checkpoint kept."""

    model_dir: Path
    precision: str
    step_seconds: dict[str, float]
    steps: int
    planned_steps: int
    epochs: float
    estimated_seconds: float
    train_seconds: float
    resumed_from: str | None
    dev_base: float | None
    dev_history: list[dict[str, float]] = field(default_factory=list)
    best_checkpoint: str | None = None
    kept_base: bool = False
    budget_note: str | None = None
    loss_history: list[dict[str, float]] = field(default_factory=list)
    train_seq_length: int | None = None

    @property
    def dev_best(self) -> float | None:
        scores = [h["ndcg@10"] for h in self.dev_history]
        return max(scores) if scores else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "precision": self.precision,
            "step_seconds": self.step_seconds,
            "steps": self.steps,
            "planned_steps": self.planned_steps,
            "epochs": self.epochs,
            "estimated_seconds": self.estimated_seconds,
            "train_seconds": self.train_seconds,
            "resumed_from": self.resumed_from,
            "dev_base_ndcg@10": self.dev_base,
            "dev_best_ndcg@10": self.dev_best,
            "dev_history": self.dev_history,
            "best_checkpoint": self.best_checkpoint,
            "kept_base": self.kept_base,
            "budget_note": self.budget_note,
            "loss_history": self.loss_history,
            "train_seq_length": self.train_seq_length,
        }


@dataclass
class DeadlineStop:
    """Where :func:`deadline_callback` stopped training (``None``: it did not)."""

    step: int | None = None


def deadline_callback(
    seconds: float,
    *,
    reserve: float,
    stop: DeadlineStop,
    evaluate: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    echo: Echo = _quiet,
) -> TrainerCallback:
    """A callback that ends training before ``seconds`` have passed, with a last checkpoint and dev evaluation.

    The step count is planned from one timed step, but a machine can turn slower mid-run (other work on it):
    this stops when the next step plus ``reserve`` (the final evaluation and save) would cross the deadline.
    ``evaluate`` is False when there is no dev split: the trainer then has nothing to evaluate on.

    The learning rate decays with the time left as well as with the steps left, whichever is further on, so a
    run the deadline stops early still ends at a low rate instead of mid-schedule (linear decay to the end of
    the budget is what "Budgeted Training", Li et al., ICLR 2020, found best under a time limit). nl2bash
    same-source: steps took 2.7 s where 1.85 s was planned, and the run stopped at step 328 of 479, its rate
    still a third of the peak.
    """
    from transformers import TrainerCallback

    class _Deadline(TrainerCallback):
        def __init__(self) -> None:
            self.started = clock()
            self.last = self.started

        def time_left(self) -> float:
            usable = seconds - reserve
            return min(1.0, max(0.0, (usable - (clock() - self.started)) / usable)) if usable > 0 else 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.started = self.last = clock()
            scheduler = kwargs.get("lr_scheduler")
            if scheduler is not None and hasattr(scheduler, "lr_lambdas"):
                scheduler.lr_lambdas = [
                    lambda step, by_steps=by_steps: min(by_steps(step), self.time_left())
                    for by_steps in scheduler.lr_lambdas
                ]
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            now = clock()
            step_seconds, self.last = now - self.last, now
            if state.global_step < state.max_steps and now - self.started + step_seconds + reserve > seconds:
                stop.step = state.global_step
                echo(f"time budget reached after step {state.global_step} of {state.max_steps}: stopping there")
                control.should_training_stop = True
                control.should_save = True
                control.should_evaluate = evaluate
            return control

    return _Deadline()


def base_model_path(base: str) -> str:
    """Where the base model's sentence-transformers files are: a packaged catalog model, a folder or a hub id."""
    from embedlab.models.encoders import SentenceTransformerEncoder
    from embedlab.models.loading import load_encoder

    encoder = load_encoder(base)
    if not isinstance(encoder, SentenceTransformerEncoder):
        raise ModelError(
            f"'{base}' is a {encoder.spec.kind} model and cannot be fine-tuned here: pick a sentence-transformers "
            "model (e.g. minilm-l6, mpnet-base, a local folder)"
        )
    return encoder.source


def load_base_model(config: FinetuneConfig, *, for_training: bool = True) -> SentenceTransformer:
    """The base model; for training, truncated to ``config.max_seq_length`` when that is set."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(base_model_path(config.base), device="cpu")
    if config.max_seq_length and for_training:
        model.max_seq_length = config.max_seq_length
    return model


def _dataset(data: LossData) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(data.columns)


def _dataset_dict(datasets: Mapping[str, Any]) -> Any:
    from datasets import DatasetDict

    return DatasetDict(dict(datasets))


def _evaluator(dev: DevSet, batch_size: int) -> Any:
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    return InformationRetrievalEvaluator(
        queries=dict(dev.queries),
        corpus=dict(dev.corpus),
        relevant_docs={q: set(d) for q, d in dev.relevant.items()},
        name="dev",
        ndcg_at_k=[10],
        mrr_at_k=[10],
        accuracy_at_k=[1],
        precision_recall_at_k=[10],
        map_at_k=[100],
        batch_size=batch_size,
        write_csv=False,
    )


def training_batches(
    model: SentenceTransformer, data: LossData, *, batch_size: int, order: str, seed: int
) -> tuple[list[list[int]], np.ndarray]:
    """The first epoch's batches as training will draw them (grouped by length, or shuffled), and the padded
    tokens of each: every text column padded to its longest text in the batch, summed."""
    import numpy as np
    import torch

    from embedlab.finetune.batches import LengthGroupedBatchSampler, batch_tokens

    sampler = LengthGroupedBatchSampler(
        _dataset(data),
        batch_size,
        False,
        generator=torch.Generator(),
        seed=seed,
        tokenizer=model.tokenizer,
        max_length=model.max_seq_length,
        unique=False,
    )
    if order == "length":
        batches = sampler.batches()
    else:
        shuffled = np.random.default_rng(seed).permutation(data.rows).tolist()
        batches = [shuffled[i : i + batch_size] for i in range(0, data.rows, batch_size)]
    return batches, batch_tokens(sampler.lengths, batches)


def measure_step_seconds(
    model: SentenceTransformer,
    loss: Any,
    data: LossData,
    *,
    batch_size: int,
    precisions: Sequence[str],
    order: str = "length",
    seed: int = 0,
) -> dict[str, float]:
    """Mean seconds of a training step (forward and backward) over the first epoch's batches, for each precision.

    A step's cost follows the padded length of its batch, and lengths are heavy-tailed (nl2bash: median 20 tokens,
    a few at the 256 limit), so no single batch is typical: the batches at the 10th, 50th and 90th percentile of
    padded tokens are timed, a line through (tokens, seconds) is fitted — its intercept holds what does not grow
    with length — and read at the mean padded tokens of all batches. Timing only the first batch said 1.3 s a step
    where a run's steps took 2.2 s. This estimate said 2.52 s for shuffled nl2bash batches that took 2.4 s, but
    0.86 s for length-grouped ones that took 1.2–1.5 s (AMD EPYC, 2 cores): the optimiser, evaluations, saves and
    the longest tenth of batches are not timed. A short estimate only plans more steps than fit; the deadline
    (:func:`deadline_callback`) ends the run on time.

    No optimiser step is taken and gradients are cleared, so the model is left as it was.
    """
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    dataset = _dataset(data)
    batches, tokens = training_batches(model, data, batch_size=batch_size, order=order, seed=seed)
    ranked = np.argsort(tokens, kind="stable")
    picked = sorted({int(ranked[round(q * (len(ranked) - 1))]) for q in (0.1, 0.5, 0.9)})
    with _temporary_dir() as tmp:
        args = SentenceTransformerTrainingArguments(output_dir=tmp, use_cpu=True, report_to="none")
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        collate = trainer.data_collator
        model.train()

        def step(rows: Sequence[int], bf16: bool) -> float:
            batch = collate([dataset[i] for i in rows])
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                value = trainer.compute_loss(model, batch)
            assert isinstance(value, torch.Tensor)
            value.backward()
            seconds = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
            return seconds

        step(batches[picked[0]], False)  # warm-up: first-call allocations and lazy initialisation
        estimates: dict[str, float] = {}
        for precision in precisions:
            seconds = np.array([step(batches[i], precision == "bf16") for i in picked])
            slope, intercept = np.polyfit(tokens[picked], seconds, 1) if len(picked) > 1 else (0.0, seconds[0])
            # a negative slope is timing noise between batches of nearly one length: their mean is the estimate
            estimates[precision] = float(intercept + slope * tokens.mean()) if slope > 0 else float(seconds.mean())
        model.zero_grad(set_to_none=True)
    return estimates


class _temporary_dir:
    def __enter__(self) -> str:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="embedlab-calibrate-")
        return self._tmp.name

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()


def bf16_supported() -> bool:
    import torch

    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except (RuntimeError, TypeError):
        return False
    return True


def latest_checkpoint(folder: Path) -> Path | None:
    """The last complete checkpoint. The trainer writes ``trainer_state.json`` last, so a run killed while saving
    leaves a folder without it, which cannot be resumed from (the next save of that step overwrites it)."""
    found = [
        (int(m.group(1)), p)
        for p in folder.glob("checkpoint-*")
        if (m := _CHECKPOINT.match(p.name)) and (p / "trainer_state.json").is_file()
    ]
    return max(found)[1] if found else None


def _format_seconds(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def train_model(
    config: FinetuneConfig,
    data: LossData | Mapping[str, LossPart],
    *,
    dev: DevSet | None,
    work_dir: Path,
    model_dir: Path,
    echo: Echo = _quiet,
    callbacks: Sequence[TrainerCallback] = (),
    show_progress: bool = False,
    learning_rate: float | None = None,
) -> TrainOutcome:
    """Train, choose the checkpoint on ``dev``, save to ``model_dir``; see the module docstring.

    ``learning_rate`` overrides ``config.learning_rate`` (the caller picks the rate for what trains).

    ``data`` is one data set for ``config.loss``, or several named :class:`LossPart` s trained together (each
    batch from one part, parts drawn in proportion to their size).
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import TrainerCallback

    from embedlab.finetune.batches import LengthGroupedBatchSampler, text_columns, training_length
    from embedlab.models.encoders import cpu_threads

    torch.set_num_threads(config.threads or cpu_threads())
    parts = {"train": LossPart(config.loss, data)} if isinstance(data, LossData) else dict(data)
    rows = sum(part.data.rows for part in parts.values())
    if rows < 2:
        raise EmbedlabError(f"{rows} training example(s): fine-tuning needs at least 2")
    specs = {name: get_loss(part.loss) for name, part in parts.items()}
    model = load_base_model(config, for_training=False)
    inference_length = model.max_seq_length
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    elif inference_length is not None:
        columns = [part.data.columns[name] for part in parts.values() for name in text_columns(part.data.columns)]
        cap, longer = training_length(model.tokenizer, columns, inference_length)
        if cap < inference_length:
            model.max_seq_length = cap
            echo(
                f"training at {cap} tokens a text (the model reads {inference_length}): {longer} of "
                f"{sum(map(len, columns))} training texts are longer and are truncated while training"
            )
    train_seq_length = model.max_seq_length
    losses = {name: build_loss(part.loss, model, config, part.make) for name, part in parts.items()}
    datasets = {name: _dataset(part.data) for name, part in parts.items()}
    batch_size = min(config.batch_size, max(part.data.rows for part in parts.values()))
    largest = max(parts, key=lambda name: parts[name].data.rows)

    checkpoints = work_dir / "checkpoints"
    state_file = work_dir / "train_state.json"
    resume = latest_checkpoint(checkpoints)
    if resume is not None:
        saved = json.loads(state_file.read_text()) if state_file.exists() else {}
        if saved.get("fingerprint") != config.fingerprint or saved.get("rows") != rows:
            echo(f"checkpoints in {checkpoints} are from other settings or data: starting afresh")
            shutil.rmtree(checkpoints)
            resume, saved = None, {}
    else:
        saved = {}

    # 1. Precision, measured (or kept from the interrupted run, so a resumed run trains the same way).
    if "precision" in saved:
        precision, step_seconds = saved["precision"], dict(saved["step_seconds"])
        echo(f"a training step, timed before the interruption: {step_seconds[precision]:.2f} s in {precision}")
    else:
        candidates = (
            ["fp32"] if config.precision == "fp32" else ["bf16"] if config.precision == "bf16" else ["fp32", "bf16"]
        )
        if "bf16" in candidates and not bf16_supported():
            candidates = ["fp32"]

        def measure(name: str, precisions: Sequence[str]) -> dict[str, float]:
            return measure_step_seconds(
                model,
                losses[name],
                parts[name].data,
                batch_size=batch_size,
                precisions=precisions,
                order=config.batch_order,
                seed=config.seed,
            )

        step_seconds = measure(largest, candidates)
        precision = min(step_seconds, key=lambda p: step_seconds[p])
        timing = ", ".join(f"{p} {s:.2f} s" for p, s in step_seconds.items())
        echo(f"a training step of {batch_size}, timed on batches of this run: {timing} -> training in {precision}")
        if len(parts) > 1:
            # Each step trains one part: the step time is the row-weighted mean of the parts' (in that precision).
            seconds = {largest: step_seconds[precision]}
            seconds.update({name: measure(name, [precision])[precision] for name in parts if name != largest})
            step_seconds[precision] = sum(seconds[n] * parts[n].data.rows for n in parts) / rows
            echo(f"a training step over all parts, weighted by their rows: {step_seconds[precision]:.2f} s")

    # 2. Base model on dev (also the cost of one evaluation).
    evaluator = _evaluator(dev, batch_size=64) if dev else None
    dev_base: float | None = saved.get("dev_base")
    eval_seconds = float(saved.get("eval_seconds", 0.0))
    if evaluator is not None and dev_base is None:
        start = time.perf_counter()
        model.eval()
        dev_base = float(evaluator(model)[evaluator.primary_metric])
        eval_seconds = time.perf_counter() - start
        model.train()
        echo(f"base model on dev ({len(dev.queries)} queries): nDCG@10 {100 * dev_base:.2f}")  # type: ignore[union-attr]

    # 3. The plan and its estimated time.
    steps_per_epoch = sum(math.ceil(part.data.rows / batch_size) for part in parts.values())
    planned = max(1, math.ceil(steps_per_epoch * config.epochs))
    n_evals = max(1, round(config.epochs))
    per_step = step_seconds[precision]
    estimate = planned * per_step + (n_evals * eval_seconds if evaluator else 0.0)
    max_steps, budget_note = planned, None
    if config.time_budget_minutes is not None and estimate > 60 * config.time_budget_minutes:
        budget = 60 * config.time_budget_minutes - (n_evals * eval_seconds if evaluator else 0.0)
        max_steps = max(1, min(planned, int(budget / per_step)))
        budget_note = (
            f"estimated {_format_seconds(estimate)} exceeds the {config.time_budget_minutes:g} min budget: "
            f"training {max_steps} of {planned} steps"
        )
        estimate = max_steps * per_step + (n_evals * eval_seconds if evaluator else 0.0)
        echo(budget_note)
    described = " + ".join(
        f"{part.data.rows} {name} examples ({part.data.texts_per_row} texts each, {specs[name].name})"
        for name, part in parts.items()
    )
    echo(f"training {described}: {max_steps} steps of {batch_size}, estimated {_format_seconds(estimate)}")
    write_json_atomic(
        state_file,
        {
            "fingerprint": config.fingerprint,
            "rows": rows,
            "precision": precision,
            "step_seconds": step_seconds,
            "dev_base": dev_base,
            "eval_seconds": eval_seconds,
        },
    )

    # 4. Train with checkpoints.
    unique = any(spec.in_batch_negatives for spec in specs.values())
    batch_sampler: Any = (
        functools.partial(
            LengthGroupedBatchSampler, tokenizer=model.tokenizer, max_length=model.max_seq_length, unique=unique
        )
        if config.batch_order == "length"
        else BatchSamplers.NO_DUPLICATES
        if unique
        else BatchSamplers.BATCH_SAMPLER
    )
    interval = config.checkpoint_steps or max(1, math.ceil(max_steps / n_evals))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=max_steps if max_steps < planned else -1,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate or config.learning_rate,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        bf16=precision == "bf16",
        batch_sampler=batch_sampler,
        eval_strategy="steps" if evaluator else "no",
        eval_steps=interval,
        save_strategy="steps",
        save_steps=interval,
        save_total_limit=2,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model=DEV_METRIC if evaluator else None,
        greater_is_better=True,
        logging_steps=max(1, max_steps // 20),
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=not show_progress,
    )

    class _FinalCheckpoint(TrainerCallback):
        """Evaluate and save at the last step too, so it can be chosen and a finished run is complete."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step >= state.max_steps:
                control.should_save = True
                control.should_evaluate = evaluator is not None
            return control

    stop = DeadlineStop()
    deadline = (
        deadline_callback(
            60 * config.time_budget_minutes,
            reserve=eval_seconds,
            stop=stop,
            evaluate=evaluator is not None,
            echo=echo,
        )
        if config.time_budget_minutes is not None
        else None
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=datasets[largest] if len(parts) == 1 else _dataset_dict(datasets),
        loss=losses[largest] if len(parts) == 1 else losses,
        evaluator=evaluator,
        callbacks=[_FinalCheckpoint(), *([deadline] if deadline else []), *callbacks],
    )
    if resume is not None:
        echo(f"resuming from {resume.name}")
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    train_seconds = time.perf_counter() - start
    if stop.step is not None:
        budget_note = (budget_note + "; " if budget_note else "") + (
            f"stopped at the {config.time_budget_minutes:g} min budget after step {stop.step}"
        )

    history = trainer.state.log_history
    dev_history = [
        {"step": float(h["step"]), "epoch": float(h.get("epoch", 0.0)), "ndcg@10": float(h[DEV_METRIC])}
        for h in history
        if DEV_METRIC in h
    ]
    loss_history = [
        {"step": float(h["step"]), "loss": float(h["loss"])} for h in history if "loss" in h and "step" in h
    ]
    best = trainer.state.best_model_checkpoint
    kept_base = False
    outcome_model = trainer.model
    if dev_base is not None and dev_history and max(h["ndcg@10"] for h in dev_history) <= dev_base:
        kept_base = True
        echo(
            f"no checkpoint beat the base model on dev (base {100 * dev_base:.2f}, best "
            f"{100 * max(h['ndcg@10'] for h in dev_history):.2f}): saving the base model unchanged"
        )
        outcome_model = load_base_model(config, for_training=False)
    # Trained on truncated texts (when max_seq_length is set) but used at the base model's full length.
    outcome_model.max_seq_length = inference_length
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    outcome_model.save(str(model_dir))
    return TrainOutcome(
        model_dir=model_dir,
        precision=precision,
        step_seconds=step_seconds,
        steps=int(trainer.state.global_step),
        planned_steps=planned,
        epochs=float(trainer.state.epoch or 0.0),
        estimated_seconds=estimate,
        train_seconds=train_seconds,
        resumed_from=resume.name if resume is not None else None,
        dev_base=dev_base,
        dev_history=dev_history,
        best_checkpoint=Path(best).name if best else None,
        kept_base=kept_base,
        budget_note=budget_note,
        loss_history=loss_history,
        train_seq_length=train_seq_length,
    )
