"""The recommender's decisions: ties and speed, constraints, nearest misses, the frontier, fine-tuning advice.

Costs here are made by hand so that each decision rule can be checked in isolation (pure logic); the whole
pipeline on real models and real measured costs is tested in tests/test_select.py.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from embedlab.cost import CorpusEstimate, Latency, Memory, ModelCost, Throughput, index_sizes
from embedlab.errors import EmbedlabError
from embedlab.evaluate.statistics import bootstrap_intervals
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
    assert advice.command == "embedlab finetune --data ../shared/data/scifact --base minilm-l6 --out runs/scifact"
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
    assert advice.command == "embedlab finetune --data 'data dir' --base minilm-l6 --out out"
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
    assert advice.base == "mpnet-base"
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
