"""Serving benchmark: DMF's decoupled scorer against its early-fusion counterpart, in one run.

Each request is one user's history (L items with text, image and fused vectors of the default
encoders' widths) and N candidates; a request computes all N x L similarities per modality, their
buckets and histograms, and scores every candidate. The two scorers alternate request by request on
the same requests, with one torch thread (one serving worker per core). Untrained models: the cost
does not depend on the weights.

    python -m bench.serving [--quick] [--candidates 1200] [--history 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import final_line, write_results
from models.dmf import DMF, DMFEarlyFusion
from models.layers import ModelConfig
from models.serving import DecoupledScorer, EarlyFusionScorer, Items

DIMS = {"text": 384, "image": 1280, "fused": 1664}  # minilm, efficientnet-lite0, their concatenation
IMAGE_SHARE = 0.3  # items with a poster, about as in MovieLens-posters
VOCAB = 10_000


def random_items(count: int, g: torch.Generator) -> Items:
    vectors = {m: torch.nn.functional.normalize(torch.randn(count, d, generator=g), dim=1) for m, d in DIMS.items()}
    present = {"text": torch.ones(count, dtype=torch.bool), "fused": torch.ones(count, dtype=torch.bool),
               "image": torch.rand(count, generator=g) < IMAGE_SHARE}
    return Items(torch.randint(1, VOCAB, (count,), generator=g), vectors, present)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 requests per scorer instead of 200")
    parser.add_argument("--candidates", type=int, default=1200)
    parser.add_argument("--history", type=int, default=50)
    args = parser.parse_args()
    requests = 20 if args.quick else 200
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, vector_dim=DIMS["fused"], buckets=10, embedding_dim=64, attention_dim=64,
                      mlp=(200, 80))
    scorers = {"decoupled": DecoupledScorer(DMF(cfg)), "early_fusion": EarlyFusionScorer(DMFEarlyFusion(cfg))}
    g = torch.Generator().manual_seed(1)
    pool = [(random_items(args.history, g), random_items(args.candidates, g)) for _ in range(8)]
    for scorer in scorers.values():  # warm-up
        scorer.score(*pool[0])
    latencies: dict[str, list[float]] = {name: [] for name in scorers}
    for i in range(requests):
        order = list(scorers) if i % 2 == 0 else list(reversed(scorers))
        for name in order:
            start = time.perf_counter()
            scorers[name].score(*pool[i % len(pool)])
            latencies[name].append(time.perf_counter() - start)

    figures = {}
    for name, values in latencies.items():
        ordered = sorted(values)
        figures[name] = {"rps": round(len(values) / sum(values), 1),
                         "p50_ms": round(1000 * statistics.median(values), 2),
                         "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)}
    ratio = figures["decoupled"]["rps"] / figures["early_fusion"]["rps"]
    settings = {"candidates": args.candidates, "history": args.history, "requests_per_scorer": requests,
                "torch_threads": 1, "model": {"embedding_dim": 64, "attention_dim": 64, "buckets": 10,
                                              "modalities": list(DIMS), "vector_dims": DIMS}}
    write_results("serving", {"ratio": round(ratio, 3), **figures}, settings, ["torch"])
    print(final_line("serving", ratio, {
        "decoupled_rps": figures["decoupled"]["rps"], "early_fusion_rps": figures["early_fusion"]["rps"],
        "decoupled_p50_ms": figures["decoupled"]["p50_ms"], "decoupled_p99_ms": figures["decoupled"]["p99_ms"],
        "early_fusion_p50_ms": figures["early_fusion"]["p50_ms"], "early_fusion_p99_ms": figures["early_fusion"]["p99_ms"],
        "candidates": args.candidates, "history": args.history}))


if __name__ == "__main__":
    main()
