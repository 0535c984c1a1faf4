"""Serving benchmark: DMF's decoupled scorer against its early-fusion counterpart, in one run.

Each request is one user's history (L items with text, image and fused vectors of the default
encoders' widths) and N candidates; a request computes all N x L similarities per modality, their
buckets and histograms, and scores every candidate. The scorers alternate request by request on the
same requests, with one torch thread (one serving worker per core). Both are measured as a server
runs them, with each candidate's modality-path term precomputed per catalog (`item_terms`), and
again without (`_uncached`). Untrained models: the cost
does not depend on the weights.

    python -m bench.serving [--quick | --tiny] [--candidates 1200] [--history 50] [--long-history 500]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.common import final_line, parser, time_interleaved, write_results
from dmf_features.features.kernels.similarity import bucket_edges
from models.dmf import DMF, DMFEarlyFusion
from models.layers import ModelConfig
from models.serving import DecoupledScorer, EarlyFusionScorer, Items

DIMS = {"text": 384, "image": 1280, "fused": 1664}  # minilm, efficientnet-lite0, their concatenation
IMAGE_SHARE = 0.3  # items with a poster, about as in MovieLens-posters
VOCAB = 10_000
NAME = "serving"
REQUESTS = {"full": 200, "quick": 20, "tiny": 3}  # per scorer


def random_items(count: int, g: torch.Generator) -> Items:
    vectors = {m: torch.nn.functional.normalize(torch.randn(count, d, generator=g), dim=1) for m, d in DIMS.items()}
    present = {
        "text": torch.ones(count, dtype=torch.bool),
        "fused": torch.ones(count, dtype=torch.bool),
        "image": torch.rand(count, generator=g) < IMAGE_SHARE,
    }
    return Items(torch.randint(1, VOCAB, (count,), generator=g), vectors, present)


def main(argv: Sequence[str] | None = None) -> None:
    options = parser(
        NAME,
        __doc__,
        quick=f"{REQUESTS['quick']} requests per scorer instead of {REQUESTS['full']}",
        tiny=f"{REQUESTS['tiny']} requests per scorer",
    )
    options.add_argument("--candidates", type=int, default=1200)
    options.add_argument("--history", type=int, default=50, help="L: history items the attention reads")
    options.add_argument(
        "--long-history", type=int, default=None, help="L_long: history items the similarity histograms count (default: L)"
    )
    args = options.parse_args(argv)
    requests = REQUESTS[args.size]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, vector_dim=DIMS["fused"], buckets=10, embedding_dim=64, attention_dim=64, mlp=(200, 80))
    g = torch.Generator().manual_seed(1)
    catalog = random_items(2_000, g)  # the quantile bucket edges of its random pairs, as the feature job finds them
    edges = {m: bucket_edges(catalog.vectors[m][catalog.present[m]].numpy(), cfg.buckets) for m in DIMS}
    scorers = {
        "decoupled": DecoupledScorer(DMF(cfg), edges, args.history),
        "early_fusion": EarlyFusionScorer(DMFEarlyFusion(cfg), edges, args.history),
    }
    long_history = max(args.long_history or args.history, args.history)
    pool = [(random_items(long_history, g), random_items(args.candidates, g)) for _ in range(8)]
    # What a server keeps per catalog: each candidate's modality-path term, computed before timing.
    terms = {name: [scorer.item_terms(candidates.vectors["fused"]) for _, candidates in pool] for name, scorer in scorers.items()}
    calls = {}
    for name, scorer in scorers.items():
        for cached in (True, False):
            calls[f"{name}{'' if cached else '_uncached'}"] = _request_loop(scorer, pool, terms[name] if cached else None)
    timings = time_interleaved(calls, requests)

    figures = {}
    for name, timing in timings.items():
        ordered = sorted(timing.seconds)
        figures[name] = {
            "rps": round(len(ordered) / sum(ordered), 1),
            "p50_ms": round(1000 * timing.median, 2),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        }
    ratio = figures["decoupled"]["rps"] / figures["early_fusion"]["rps"]
    ratio_uncached = figures["decoupled_uncached"]["rps"] / figures["early_fusion_uncached"]["rps"]
    settings = {
        "candidates": args.candidates,
        "history": args.history,
        "long_history": long_history,
        "requests_per_scorer": requests,
        "torch_threads": 1,
        "model": {"embedding_dim": 64, "attention_dim": 64, "buckets": 10, "modalities": list(DIMS), "vector_dims": DIMS},
    }
    path = write_results(
        NAME, {"ratio": round(ratio, 3), "ratio_uncached": round(ratio_uncached, 3), **figures}, settings, ["torch"], args
    )
    print(f"results: {path}")
    print(
        final_line(
            NAME,
            ratio,
            {
                "decoupled_rps": figures["decoupled"]["rps"],
                "early_fusion_rps": figures["early_fusion"]["rps"],
                "decoupled_p50_ms": figures["decoupled"]["p50_ms"],
                "decoupled_p99_ms": figures["decoupled"]["p99_ms"],
                "early_fusion_p50_ms": figures["early_fusion"]["p50_ms"],
                "early_fusion_p99_ms": figures["early_fusion"]["p99_ms"],
                "ratio_uncached": round(ratio_uncached, 3),
                "candidates": args.candidates,
                "history": args.history,
                "long_history": long_history,
            },
        )
    )


def _request_loop(scorer, pool, terms):
    """A call that scores the next request of the pool (with the catalog's item terms, if given)."""
    turn = iter(range(1 << 62))

    def call():
        i = next(turn) % len(pool)
        return scorer.score(*pool[i], None if terms is None else terms[i])

    return call


if __name__ == "__main__":
    main()
