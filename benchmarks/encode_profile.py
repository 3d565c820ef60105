"""Where encoding time goes on one backend: tokenisation, padding, feeds, inference (per OpenVINO op kind:
int8 matrix products, attention, normalisation, copies/reorders) and the output copy; and how fast the int8
matrix products run against this machine's int8 peak, measured here on one large int8 matrix product.

The texts are SciFact abstracts (a fixed, seeded sample), encoded as embedlab encodes them (tokenised once, sorted
by length, each batch padded to its longest text). The model runs on ``openvino-int8`` fitted to a sample of the
SciFact corpus (as a command with that corpus fits it). OpenVINO's per-op performance counters (``PERF_COUNT``)
give each op's time; ops are grouped by what they are:

* ``int8 matmul``: matrix products with int8 weights and activations (exec type ``*_I8``/``*_U8``);
* ``attention``: the products of queries and keys and of weights and values, softmax, and fused attention ops;
* ``other float``: LayerNorm (MVN), GELU, additions, pooling, normalisation;
* ``copies``: Reorder, Convert, Transpose, Reshape, Concat, Gather (layout and precision changes, embeddings).

Usage::

    python benchmarks/encode_profile.py --model minilm-l6 --docs 1000 --out runs/profile-minilm.json
    python benchmarks/encode_profile.py --batch-sizes 8,16,32,64     # also: the speed at each batch size
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from embedlab.data.loaders import load_beir
from embedlab.files import format_table, write_json_atomic
from embedlab.manifest import build_manifest, hardware
from embedlab.models.backends import ExportInfo, ensure_artifact, using_corpus
from embedlab.models.encoders import SentenceTransformerEncoder, cpu_threads
from embedlab.models.loading import load_encoder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
COPIES = {"Reorder", "Convert", "Transpose", "Reshape", "Concatenation", "Concat", "Gather", "Broadcast"}


def kind_of(info: Any) -> str:
    """The group of one OpenVINO op in the compiled model's profile. The CPU plugin turns products with a constant
    weight into ``FullyConnected*``; the ``MatMul`` left are activation × activation: attention's, which it may fuse
    with the softmax into one ``Subgraph`` (named after the attention's MatMul)."""
    node_type, exec_type, name = info.node_type, info.exec_type.lower(), info.node_name.lower()
    if node_type.startswith("FullyConnected"):
        return "int8 matmul" if "i8" in exec_type or "u8" in exec_type else "float matmul"
    if node_type in {"MatMul", "ScaledDotProductAttention", "MHA", "Softmax", "SoftMax"}:
        return "attention"
    if node_type == "Subgraph" and "attention" in name and "matmul" in name:
        return "attention"
    if node_type == "Multiply" and "smooth_quant" in name:
        return "SmoothQuant scaling"
    if node_type in COPIES:
        return "copies"
    return "other float"


def int8_peak(threads: int, shapes: tuple[tuple[int, int, int], ...] = ((2048, 2048, 2048), (8192, 384, 1536))) -> dict:
    """Ops per second of large int8 matrix products alone on OpenVINO (NNCF-quantised, as the models are), for
    each ``(tokens, in, out)`` shape: the int8 throughput this machine reaches with ``threads`` threads, the best
    shape's figure as ``gops``, and the kernel OpenVINO ran it with."""
    import nncf
    import openvino
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    nncf.set_log_level(40)
    core = openvino.Core()
    found: dict[str, Any] = {"shapes": {}}
    for m, k, n in shapes:
        weight = ops.constant(rng.standard_normal((n, k)).astype(np.float32))
        x = ops.parameter([m, k], np.float32, name="x")
        model = openvino.Model([ops.matmul(x, weight, False, True)], [x], "gemm")
        data = [rng.standard_normal((m, k)).astype(np.float32) for _ in range(2)]
        quantised = nncf.quantize(model, nncf.Dataset(data), subset_size=2)
        config = {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
        request = core.compile_model(quantised, "CPU", config).create_infer_request()
        for _ in range(2):
            request.infer({0: data[0]})
        runs = 10
        t0 = time.perf_counter()
        for _ in range(runs):
            request.infer({0: data[0]})
        seconds = (time.perf_counter() - t0) / runs
        kernels = [p.exec_type for p in request.get_profiling_info() if p.node_type.startswith("FullyConnected")]
        found["shapes"][f"{m}x{k}x{n}"] = {"gops": 2 * m * k * n / seconds / 1e9, "kernel": kernels[:1]}
    best = max(found["shapes"].items(), key=lambda kv: kv[1]["gops"])
    found.update(gops=best[1]["gops"], shape=best[0], kernel=(best[1]["kernel"] or ["?"])[0])
    return found


def nominal_int8_peak(threads: int, flags: list[str]) -> dict[str, Any]:
    """The int8 ops per second the cores could do on paper at their nominal clock: AMX's tile unit does 1,024
    int8 multiply-adds per cycle per core, AVX-512 VNNI 128 (two ports of 64)."""
    mhz = 0.0
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            mhz = float(line.split(":")[1])
            break
    per_cycle = 1024 if "amx_int8" in flags else 128 if "avx512_vnni" in flags else 0
    return {"mhz": mhz, "macs_per_cycle_per_core": per_cycle, "gops": 2 * per_cycle * mhz * 1e6 * threads / 1e9}


def matmul_ops_per_token(encoder: SentenceTransformerEncoder) -> float:
    """Multiply-adds × 2 per token of the weight matrix products (the exported graph's constant-weight MatMuls)."""
    import onnx

    export = ensure_artifact("onnx-export", encoder)
    model = onnx.load(str(export / "model.onnx"), load_external_data=True)
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in shapes and len(shapes[node.input[1]]) == 2:
            k, n = shapes[node.input[1]]
            total += k * n
    return 2.0 * total


def profile(encoder: SentenceTransformerEncoder, texts: list[str], batch_size: int) -> dict[str, Any]:
    import openvino

    folder = encoder.artifact
    assert folder is not None
    info = ExportInfo.read(folder)
    runner = encoder._runner
    tokenizer = runner.tokenizer
    threads = cpu_threads()
    compiled = openvino.Core().compile_model(
        str(info.model_file),
        "CPU",
        {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True},
    )
    request = compiled.create_infer_request()
    seconds: dict[str, float] = defaultdict(float)
    by_kind: dict[str, float] = defaultdict(float)
    by_op: dict[tuple[str, str], float] = defaultdict(float)
    t0 = time.perf_counter()
    encodings = tokenizer.encode_batch(texts)
    seconds["tokenise"] = time.perf_counter() - t0
    lengths = np.array([len(e.ids) for e in encodings])
    order = np.argsort(lengths, kind="stable")
    # What padding would cost without the length sort: batches in the texts' own order.
    unsorted_padded = sum(
        int(lengths[i : i + batch_size].max()) * len(lengths[i : i + batch_size])
        for i in range(0, len(lengths), batch_size)
    )
    real_tokens = padded_tokens = 0
    out = np.zeros((len(texts), info.dim), dtype=np.float32)
    warm = True
    for start in range(0, len(texts), batch_size):
        t0 = time.perf_counter()
        index = order[start : start + batch_size]
        batch = [encodings[i] for i in index]
        feeds = runner.feeds(batch)  # padded exactly as the product pads
        seconds["pad and feed"] += time.perf_counter() - t0
        real_tokens += sum(len(e.ids) for e in batch)
        padded_tokens += feeds["input_ids"].size
        if warm:  # the first inference compiles kernels for new shapes; not part of the steady state
            request.infer(feeds)
            warm = False
        t0 = time.perf_counter()
        result = request.infer(feeds)
        seconds["inference"] += time.perf_counter() - t0
        for p in request.get_profiling_info():
            took = p.real_time.total_seconds()
            by_kind[kind_of(p)] += took
            by_op[(p.node_type, p.exec_type)] += took
        t0 = time.perf_counter()
        out[index] = np.array(result["sentence_embedding"], dtype=np.float32)
        seconds["output copy"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    seconds["normalise"] = time.perf_counter() - t0
    total = sum(seconds.values())
    op_total = sum(by_kind.values())
    ops = matmul_ops_per_token(encoder)
    return {
        "docs": len(texts),
        "batch_size": batch_size,
        "seconds": dict(seconds),
        "total_seconds": total,
        "docs_per_second": len(texts) / total,
        "real_tokens": real_tokens,
        "padded_tokens": padded_tokens,
        "padding_share": 1 - real_tokens / padded_tokens,
        "padding_share_unsorted": 1 - real_tokens / unsorted_padded,
        "op_seconds_by_kind": dict(by_kind),
        "op_seconds_total": op_total,
        "top_ops": sorted(([f"{t} [{e}]", s] for (t, e), s in by_op.items()), key=lambda r: -r[1])[:12],
        "weight_matmul_ops_per_token": ops,
        "int8_matmul_gops": ops * padded_tokens / by_kind["int8 matmul"] / 1e9 if by_kind["int8 matmul"] else None,
    }


def speed(encoder: SentenceTransformerEncoder, texts: list[str], batch_size: int) -> float:
    encoder.encode(texts[:batch_size], role="document", batch_size=batch_size)
    t0 = time.perf_counter()
    encoder.encode(texts, role="document", batch_size=batch_size)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--backend", default="openvino-int8")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-sizes", default="", help="Also time encoding at each of these batch sizes.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    info = hardware()
    print(f"CPU: {info['cpu']}; flags: {', '.join(info['cpu_flags'])}; threads: {cpu_threads()}", flush=True)
    dataset = load_beir(DATA, split="test")
    corpus = [d.full_text for d in dataset.corpus]
    texts = random.Random(0).sample(corpus, min(args.docs, len(corpus)))
    with using_corpus(corpus):
        encoder = load_encoder(args.model, backend=args.backend)
        assert isinstance(encoder, SentenceTransformerEncoder)
        encoder.prepare()
    result = profile(encoder, texts, args.batch_size)
    peak = int8_peak(cpu_threads())
    result["int8_peak"] = peak
    nominal = nominal_int8_peak(cpu_threads(), info["cpu_flags"])
    result["int8_nominal_peak"] = nominal
    rows = [[part, f"{s:.2f}", f"{100 * s / result['total_seconds']:.1f}%"] for part, s in result["seconds"].items()]
    print(f"\n{args.model} on {args.backend}: {len(texts)} SciFact abstracts, batch {args.batch_size}")
    print(format_table(["stage", "seconds", "share"], rows))
    print(
        f"padding: {100 * result['padding_share']:.1f}% of the tokens run are padding "
        f"({result['real_tokens']:,} real of {result['padded_tokens']:,}); without the length sort it would be "
        f"{100 * result['padding_share_unsorted']:.1f}%"
    )
    op_rows = [
        [kind, f"{s:.2f}", f"{100 * s / result['op_seconds_total']:.1f}%"]
        for kind, s in sorted(result["op_seconds_by_kind"].items(), key=lambda kv: -kv[1])
    ]
    print("\ninside inference (OpenVINO per-op counters):")
    print(format_table(["op kind", "seconds", "share"], op_rows))
    print(format_table(["op [kernel]", "seconds"], [[name, f"{s:.2f}"] for name, s in result["top_ops"]]))
    achieved = result["int8_matmul_gops"]
    print(
        f"\nint8 weight matmuls: {achieved:.0f} GOPS achieved (padded tokens) against {peak['gops']:.0f} GOPS for a "
        f"{peak['shape']} int8 matmul alone here [{peak['kernel']}] ({peak['shapes']}): "
        f"{100 * achieved / peak['gops']:.0f}% of it"
        if achieved
        else "no int8 matmul found"
    )
    if achieved:
        print(
            f"on paper: {nominal['gops']:.0f} GOPS ({nominal['macs_per_cycle_per_core']} int8 multiply-adds per cycle "
            f"per core at {nominal['mhz']:.0f} MHz, {cpu_threads()} threads): {100 * achieved / nominal['gops']:.1f}%"
        )
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    if sizes:
        result["batch_size_speeds"] = {b: speed(encoder, texts, b) for b in sizes}
        print(format_table(["batch", "docs/s"], [[str(b), f"{v:.1f}"] for b, v in result["batch_size_speeds"].items()]))
    if args.out:
        write_json_atomic(
            args.out,
            {
                "kind": "encode_profile",
                "model": args.model,
                "backend": args.backend,
                "result": result,
                "manifest": build_manifest(
                    command="encode_profile", models=[args.model], wall_seconds=time.perf_counter() - started
                ),
            },
        )


if __name__ == "__main__":
    main()
