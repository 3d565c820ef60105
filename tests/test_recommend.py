"""The recommender's decisions: ties and speed, constraints, nearest misses, the frontier, fine-tuning advice.

Costs here are made by hand so that each decision rule can be checked in isolation (pure logic); the whole
pipeline on real models and real measured costs is tested in tests/test_select.py.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedlab.cost import CorpusEstimate, Latency, Memory, ModelCost, Throughput, index_sizes
from embedlab.errors import EmbedlabError
from embedlab.evaluate.statistics import bootstrap_intervals
from embedlab.finetune.provenance import TrainingOverlap
from embedlab.recommend import (
    Candidate,
    Constraints,
    check,
    deploy_commands,
    finetune_advice,
    pareto_frontier,
    recommend,
    training_judgements,
)

N = 200


def make_cost(
    name: str, *, docs_per_s: float, p95_ms: float = 5.0, dim: int | None = 384, size_mb: float = 90.0, licence="MIT"
) -> ModelCost:
    return ModelCost(
        name=name,
        kind="bm25" if dim is None else "sentence-transformers",
        dim=dim,
        licence=licence,
        size_bytes=int(size_mb * 1e6),
        size_source="test",
        load_seconds=1.0,
        documents=Throughput(64, 6400, 64 / docs_per_s),
        queries=Throughput(32, 320, 32 / (4 * docs_per_s)),
        latency=Latency(tuple(np.linspace(p95_ms / 2, p95_ms, 20).tolist())),
        memory=Memory(100, 100, 300_000_000, "test"),
        index=index_sizes(dim) if dim else (),
        corpus=CorpusEstimate(5000, 5000 / docs_per_s, 400_000_000, 5000 * 4 * (dim or 0), "test"),
    )


def scores(mean: float, seed: int, spread: float = 0.25) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"q{i}": float(v) for i, v in enumerate(np.clip(rng.normal(mean, spread, N), 0, 1))}


def candidate(name: str, per_query: dict[str, float], cost: ModelCost, kind: str | None = None) -> Candidate:
    values = list(per_query.values())
    return Candidate(
        name=name,
        kind=kind or cost.kind,
        quality=float(np.mean(values)),
        interval=bootstrap_intervals({name: values}, resamples=500)[name],
        cost=cost,
    )


@pytest.fixture
def field() -> tuple[list[Candidate], dict[str, dict[str, float]]]:
    base = scores(0.60, seed=1)
    rng = np.random.default_rng(2)
    per_query = {
        "mpnet-base": base,
        # minilm: the same queries, slightly lower on average but within noise.
        "minilm-l6": {q: float(np.clip(v - 0.005 + rng.normal(0, 0.05), 0, 1)) for q, v in base.items()},
        "static-minilm": {q: v * 0.6 for q, v in base.items()},
        "bm25": {q: v * 0.8 for q, v in base.items()},
    }
    costs = {
        "mpnet-base": make_cost("mpnet-base", docs_per_s=6, p95_ms=60, dim=768, size_mb=420, licence="Apache-2.0"),
        "minilm-l6": make_cost("minilm-l6", docs_per_s=30, p95_ms=12, licence="Apache-2.0"),
        "static-minilm": make_cost("static-minilm", docs_per_s=900, p95_ms=0.3, dim=256, size_mb=15),
        "bm25": make_cost("bm25", docs_per_s=3000, p95_ms=1.0, dim=None, size_mb=0),
    }
    return [candidate(n, per_query[n], costs[n]) for n in per_query], per_query


def test_a_tied_much_faster_model_is_chosen_with_the_reason(field) -> None:
    candidates, per_query = field
    rec = recommend(candidates, metric="ndcg@10", per_query=per_query, resamples=1000)
    assert rec.model == "minilm-l6"
    assert rec.tied_with_top[:2] == ("mpnet-base", "minilm-l6")
    assert rec.reasons[0].startswith("mpnet-base is tied with minilm-l6 on ndcg@10 (p = ")
    assert "5.0× slower: use minilm-l6" in rec.reasons[0]
    assert rec.tests["static-minilm"].tied is False
    assert str(rec).startswith("Use minilm-l6.")


def test_constraints_rule_out_and_are_named(field) -> None:
    candidates, per_query = field
    constraints = Constraints(max_latency_ms=5, licences=("MIT",))
    rec = recommend(candidates, metric="ndcg@10", per_query=per_query, constraints=constraints, resamples=1000)
    assert set(rec.feasible) == {"static-minilm", "bm25"}
    assert rec.model == "bm25"  # the better of the two that fit, significantly
    assert [v.option for v in rec.violations["mpnet-base"]] == ["--max-latency-ms", "--licence"]
    assert any("minilm-l6 scores higher" in r and "p95 latency" in r for r in rec.reasons)


def test_no_feasible_candidate_names_the_nearest_misses(field) -> None:
    candidates, per_query = field
    constraints = Constraints(max_latency_ms=0.1, min_throughput=2000)
    rec = recommend(candidates, metric="ndcg@10", per_query=per_query, constraints=constraints, resamples=1000)
    assert rec.model is None and rec.feasible == ()
    assert rec.headline.startswith("No candidate meets all your constraints")
    # bm25 breaks one constraint, the others two; of those, static-minilm by the least.
    assert rec.nearest_misses == ("bm25", "static-minilm", "minilm-l6")
    assert len(rec.reasons) == 3
    assert "--max-latency-ms" in rec.reasons[0] and "--min-throughput" not in rec.reasons[0]
    assert "--max-latency-ms" in rec.reasons[1] and "--min-throughput" in rec.reasons[1]
    assert rec.to_dict()["violations"]["bm25"][0]["factor"] > 1


def test_check_covers_every_rule() -> None:
    cost = make_cost("m", docs_per_s=10, p95_ms=20, dim=768, size_mb=400, licence="CC-BY-NC-4.0")
    item = Candidate("m", "sentence-transformers", 0.5, bootstrap_intervals({"m": [0.5]})["m"], cost)
    everything = Constraints(max_latency_ms=10, max_dim=384, max_size_mb=100, licences=("MIT",), min_throughput=20)
    options = [v.option for v in check(item, everything)]
    assert options == ["--max-latency-ms", "--max-dim", "--max-size-mb", "--licence", "--min-throughput"]
    assert check(item, Constraints()) == ()
    loose = Constraints(max_latency_ms=100, max_dim=1024, max_size_mb=500, licences=("cc-by-nc-4.0",))
    assert check(item, loose) == ()
    hybrid = make_cost("hybrid", docs_per_s=10, licence="Apache-2.0 + MIT")
    both = Candidate("hybrid", "hybrid", 0.5, bootstrap_intervals({"h": [0.5]})["h"], hybrid)
    assert check(both, Constraints(licences=("Apache-2.0",)))[0].message.startswith("licence MIT")
    assert check(both, Constraints(licences=("MIT", "Apache-2.0"))) == ()
    with pytest.raises(EmbedlabError, match="--max-latency-ms must be a positive number"):
        Constraints(max_latency_ms=-1)
    assert everything.describe().startswith("p95 latency ≤ 10 ms, dimension ≤ 384")


def test_pareto_frontier() -> None:
    assert pareto_frontier({"a": (0.6, 10.0), "b": (0.5, 100.0), "c": (0.4, 50.0), "d": (0.6, 5.0)}) == ["b", "a"]
    assert pareto_frontier({"x": (0.5, 1.0), "y": (0.5, 1.0)}) == ["x", "y"]  # equal points do not dominate


def test_with_only_the_evaluated_queries_judged_the_advice_trains_on_corpus_queries(field) -> None:
    candidates, per_query = field
    by_name = {c.name: c for c in candidates}
    advice = finetune_advice(
        candidates,
        chosen=by_name["static-minilm"],
        per_query=per_query,
        metric="ndcg@10",
        training=None,
        data_ref="d",
        out="o",
        resamples=500,
    )
    # Only the evaluated queries are judged: never train on them; corpus queries train, the evaluated ones measure.
    assert advice.train_queries == "corpus" and advice.teacher == "mpnet-base"
    assert advice.command == (
        "embedlab finetune --data d --base minilm-l6 --teacher mpnet-base --train-queries corpus --eval d --out o"
    )
    text = str(advice)
    assert "compare again" not in text and advice.command in text
    assert any("static-minilm cannot be fine-tuned itself" in r for r in advice.reasons)
    assert any(
        f"no training judgements beside the {N} evaluated queries" in r and "--train-queries corpus" in r
        for r in advice.reasons
    )


def test_the_teacher_is_the_best_other_system_never_the_base_nor_one_trained_on_the_evaluated_data(field) -> None:
    candidates, per_query = field
    by_name = {c.name: c for c in candidates}
    minilm = by_name["minilm-l6"]
    hybrid_scores = {q: min(1.0, v + 0.1) for q, v in per_query["minilm-l6"].items()}
    hybrid = replace(
        candidate("hybrid", hybrid_scores, make_cost("hybrid", docs_per_s=25), kind="hybrid"),
        parts=("bm25", "minilm-l6"),
        label="the hybrid of bm25 and minilm-l6 (reciprocal rank fusion)",
    )
    # A quantised copy of the base scoring above it: it knows nothing the base does not, so it never teaches.
    int8 = candidate("minilm-l6-int8", {q: min(1.0, v + 0.05) for q, v in per_query["minilm-l6"].items()}, minilm.cost)
    field_ = [minilm, hybrid, int8, by_name["bm25"], by_name["static-minilm"]]
    scores_ = {**per_query, "hybrid": hybrid_scores, "minilm-l6-int8": dict(per_query["minilm-l6"])}

    def advise(field_: list[Candidate], chosen: Candidate):
        return finetune_advice(
            field_,
            chosen=chosen,
            per_query=scores_,
            metric="ndcg@10",
            training=None,
            data_ref="data.jsonl",
            out="runs/x",
            resamples=200,
        )

    advice = advise(field_, minilm)
    assert advice.base == "minilm-l6" and advice.teacher == "hybrid:minilm-l6"
    assert "--teacher hybrid:minilm-l6 --train-queries corpus --eval data.jsonl" in (advice.command or "")
    assert any(
        r.startswith("the teacher is hybrid:minilm-l6 (the hybrid of bm25 and minilm-l6") for r in advice.reasons
    )
    # The hybrid trained on the evaluated queries (its dense part did): it would pass them on; the int8 copy is the
    # base; BM25 teaches.
    leaky = replace(hybrid, overlap=TrainingOverlap(queries=3, relevant_documents=4, evaluated_queries=N))
    advice = advise([minilm, leaky, int8, by_name["bm25"]], minilm)
    assert advice.teacher == "bm25"
    # The base is the best system: the best other one teaches, and the reasons say it is weaker.
    advice = advise([minilm, by_name["static-minilm"]], minilm)
    assert advice.teacher is None  # static-minilm is distilled from the base
    advice = advise([by_name["mpnet-base"], by_name["bm25"]], by_name["mpnet-base"])
    assert advice.base == "mpnet-base" and advice.teacher == "bm25"
    assert any(
        "points below mpnet-base (no other system here that can teach scores higher)" in r for r in advice.reasons
    )


def test_a_model_trained_on_the_evaluated_data_is_called_out(field) -> None:
    candidates, per_query = field
    overlap = TrainingOverlap(queries=12, relevant_documents=40, evaluated_queries=N)
    marked = [replace(c, overlap=overlap) if c.name == "mpnet-base" else c for c in candidates]
    rec = recommend(marked, metric="ndcg@10", per_query=per_query, resamples=1000)
    assert rec.model == "minilm-l6"
    unfair = [r for r in rec.reasons if "not a fair comparison" in r]
    assert unfair == [
        f"mpnet-base † trained on 12 of {N} evaluated queries and 40 of their relevant documents: its ndcg@10 "
        "here is not a fair comparison with the others"
    ]
    marked = [replace(c, overlap=overlap) if c.name == "minilm-l6" else c for c in candidates]
    rec = recommend(marked, metric="ndcg@10", per_query=per_query, resamples=1000)
    assert rec.model == "minilm-l6"
    assert any(r.startswith("minilm-l6 † trained on 12") and "this choice rests on it" in r for r in rec.reasons)
    # Neither fine-tuned further (its before/after on these queries would not be fair) nor a teacher.
    assert rec.finetune.base == "mpnet-base" and rec.finetune.teacher == "bm25"
    assert any(r.startswith("minilm-l6 trained on the evaluated data (†)") for r in rec.finetune.reasons)
    # When every fine-tunable candidate trained on the evaluated data, there is nothing fair to fine-tune here.
    everything = [replace(c, overlap=overlap) if c.kind != "bm25" else c for c in candidates]
    advice = recommend(everything, metric="ndcg@10", per_query=per_query, resamples=1000).finetune
    assert advice.verdict == "not possible" and advice.command is None
    assert any("the model they started from" in r for r in advice.reasons)
    clean = [replace(c, overlap=TrainingOverlap(0, 0, N)) for c in candidates]
    rec = recommend(clean, metric="ndcg@10", per_query=per_query, resamples=1000)
    assert not any("not a fair comparison" in r for r in rec.reasons)


def test_finetune_advice_weighs_domain_shift_and_training_data(field, shared_data: Path) -> None:
    candidates, per_query = field
    training = training_judgements(shared_data / "scifact", "test")
    assert training is not None
    with (shared_data / "scifact" / "qrels" / "train.tsv").open() as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t")][1:]
    assert training.judgements == sum(1 for r in rows if int(r[2]) > 0)
    assert training.queries == len({r[0] for r in rows})
    assert training_judgements(shared_data / "scifact", "train") is None  # training on the evaluated split: no

    by_name = {c.name: c for c in candidates}
    # BM25 far below the dense models, training data present: possible, not likely.
    advice = finetune_advice(
        candidates,
        chosen=by_name["minilm-l6"],
        per_query=per_query,
        metric="ndcg@10",
        training=training,
        data_ref="../shared/data/scifact",
        out="runs/scifact",
        resamples=500,
    )
    assert advice.verdict == "possible"
    # The teacher: the best system other than the base (no hybrid here): mpnet-base; training on the train split.
    assert advice.teacher == "mpnet-base" and advice.train_queries is None
    assert advice.command == (
        "embedlab finetune --data ../shared/data/scifact --base minilm-l6 --teacher mpnet-base --out runs/scifact"
    )
    mpnet = 100 * by_name["mpnet-base"].quality
    gap = 100 * (by_name["mpnet-base"].quality - by_name["minilm-l6"].quality)
    assert f"the teacher is mpnet-base, ndcg@10 {mpnet:.1f} here, {gap:+.1f} points over minilm-l6" in "".join(
        advice.reasons
    )
    # BM25 above every dense model: domain shift; with training judgements fine-tuning is likely to pay off.
    shifted = [*candidates[:3], candidate("bm25", scores(0.75, seed=9), candidates[3].cost)]
    per_query_shifted = {**per_query, "bm25": scores(0.75, seed=9)}
    advice = finetune_advice(
        shifted,
        chosen=shifted[3],
        per_query=per_query_shifted,
        metric="ndcg@10",
        training=training,
        data_ref="data dir",
        out="out",
        resamples=500,
    )
    assert advice.verdict == "likely"
    assert advice.bm25_gap is not None and advice.bm25_gap < 0
    # bm25 cannot be fine-tuned; minilm-l6 is tied with the best dense model (mpnet-base) and 5x faster.
    assert advice.base == "minilm-l6"
    assert advice.teacher == "bm25" and advice.teacher_score == shifted[3].quality
    assert advice.command == "embedlab finetune --data 'data dir' --base minilm-l6 --teacher bm25 --out out"
    assert any("minilm-l6 is tied with the best dense model (mpnet-base) and 5.0× faster" in r for r in advice.reasons)
    # Without the faster model in the field, the best dense model is the one to fine-tune.
    no_minilm = [c for c in shifted if c.name != "minilm-l6"]
    advice = finetune_advice(
        no_minilm,
        chosen=shifted[3],
        per_query={k: v for k, v in per_query_shifted.items() if k != "minilm-l6"},
        metric="ndcg@10",
        training=training,
        data_ref="d",
        out="o",
        resamples=500,
    )
    assert advice.base == "mpnet-base" and advice.teacher == "bm25"
    # No training judgements and no sign of shift: unlikely.
    advice = finetune_advice(
        candidates,
        chosen=by_name["static-minilm"],
        per_query=per_query,
        metric="ndcg@10",
        training=None,
        data_ref="d",
        out="o",
        resamples=500,
    )
    assert advice.verdict == "unlikely"
    assert advice.base == "minilm-l6"  # static-minilm is distilled from minilm-l6: fine-tune that


def test_the_recommendation_ends_with_the_commands_that_deploy_it(field) -> None:
    candidates, per_query = field
    by_name = {c.name: c for c in candidates}
    data = "../shared/data/sci fact"
    assert deploy_commands(by_name["minilm-l6"], candidates, data_ref=data) == (
        "embedlab index --model minilm-l6 --data '../shared/data/sci fact' --out indexes/sci-fact-minilm-l6",
        "embedlab serve --index indexes/sci-fact-minilm-l6",
    )
    assert deploy_commands(by_name["bm25"], candidates, data_ref="data/nf")[0] == (
        "embedlab index --model bm25 --data data/nf --out indexes/nf-bm25"
    )
    tuned = Candidate(**{**vars(by_name["minilm-l6"]), "name": "tuned", "source": "models/tuned"})
    hybrid = Candidate(**{**vars(by_name["minilm-l6"]), "name": "hybrid", "kind": "hybrid", "parts": ("bm25", "tuned")})
    index, serve = deploy_commands(hybrid, [*candidates, tuned, hybrid], data_ref="data/nf")
    assert index == "embedlab index --model hybrid:models/tuned --data data/nf --out indexes/nf-hybrid-models-tuned"
    assert serve == "embedlab serve --index indexes/nf-hybrid-models-tuned"
    rec = recommend(candidates, metric="ndcg@10", per_query=per_query, data_ref="data/nf", resamples=2000)
    assert rec.deploy == deploy_commands(by_name[rec.model], candidates, data_ref="data/nf")
    assert str(rec).splitlines()[-3:] == ["Deploy it:", f"  {rec.deploy[0]}", f"  {rec.deploy[1]}"]
    assert rec.to_dict()["deploy"] == list(rec.deploy)
