"""The CTR models (no Spark): shapes, padding invariance, and the serving paths against training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dmf_features.features.kernels.similarity import bucket_of
from models.batch import CTRBatch
from models.din import DIN, DINMultimodal, ModalityCentric
from models.dmf import DMF, DMFEarlyFusion
from models.layers import ModelConfig
from models.serving import (
    DecoupledScorer,
    EarlyFusionScorer,
    Items,
    request_features,
    training_batch,
)

MODALITIES = ("text", "image", "fused")
CFG = ModelConfig(
    vocab_size=50,
    vector_dim=6,
    modalities=MODALITIES,
    buckets=5,
    embedding_dim=8,
    attention_dim=8,
    mlp=(16,),
    context=True,
    context_features=4,
    target_content=True,
    top_similarities=True,
    top_k=3,
)
VARIANTS = {
    "din": (DIN, {}),
    "din_multimodal": (DINMultimodal, {}),
    "modality_centric": (ModalityCentric, {}),
    "dmf_gate": (DMF, {}),
    "dmf_concat": (DMF, {"fusion": "concat"}),
    "dmf_sum": (DMF, {"fusion": "weighted_sum"}),
    "dmf_no_buckets": (DMF, {"use_buckets": False}),
    "dmf_no_modality_path": (DMF, {"use_modality_path": False}),
    "dmf_early_fusion": (DMFEarlyFusion, {}),
    "dmf_ids_only": (
        DMF,
        {"context": False, "context_features": 0, "target_content": False, "top_similarities": False, "top_k": 0},
    ),
    "din_no_context": (DIN, {"context": False, "context_features": 0}),
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cls, changes = VARIANTS[name]
    return cls(ModelConfig.model_validate({**CFG.model_dump(), **changes})).eval()


def random_batch(n: int = 7, length: int = 4, seed: int = 1) -> CTRBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 1, length] + [int(x) for x in torch.randint(0, length + 1, (n - 3,), generator=g)])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    ids = torch.randint(1, CFG.vocab_size, (n, length), generator=g) * mask
    buckets = {m: torch.where(mask, torch.randint(-1, CFG.buckets, (n, length), generator=g), -1) for m in MODALITIES}
    sims = {m: torch.where(buckets[m] >= 0, torch.rand(n, length, generator=g) * 2 - 1, 0.0) for m in MODALITIES}
    hist = {m: torch.softmax(torch.randn(n, CFG.buckets, generator=g), dim=-1) for m in MODALITIES}
    top = {m: torch.rand(n, 1 + CFG.top_k, generator=g) for m in MODALITIES}
    return CTRBatch(
        user_ids=torch.arange(n),
        target_ids=torch.randint(1, CFG.vocab_size, (n,), generator=g),
        hist_ids=ids,
        hist_mask=mask,
        buckets=buckets,
        sims=sims,
        sim_hist=hist,
        sim_top=top,
        target_vectors=torch.randn(n, CFG.vector_dim, generator=g),
        hist_vectors=torch.randn(n * length, CFG.vector_dim, generator=g),
        hist_vector_rows=torch.arange(n * length).reshape(n, length),
        context=torch.randn(n, CFG.context_features, generator=g),
        labels=torch.randint(0, 2, (n,), generator=g).float(),
    )


def padded(batch: CTRBatch, extra: int, seed: int = 9) -> CTRBatch:
    """The same batch with `extra` more padding positions holding garbage ids, buckets, sims, vectors."""
    g = torch.Generator().manual_seed(seed)
    n = len(batch)

    def grow(t: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, fill], dim=1)

    return dataclasses.replace(
        batch,
        hist_ids=grow(batch.hist_ids, torch.randint(1, CFG.vocab_size, (n, extra), generator=g)),
        hist_mask=grow(batch.hist_mask, torch.zeros(n, extra, dtype=torch.bool)),
        buckets={m: grow(b, torch.randint(0, CFG.buckets, (n, extra), generator=g)) for m, b in batch.buckets.items()},
        sims={m: grow(s, torch.rand(n, extra, generator=g)) for m, s in batch.sims.items()},
        hist_vectors=torch.cat([batch.hist_vectors, torch.randn(n * extra, CFG.vector_dim, generator=g)]),
        hist_vector_rows=grow(batch.hist_vector_rows, len(batch.hist_vectors) + torch.arange(n * extra).reshape(n, extra)),
    )


@pytest.mark.parametrize("name", VARIANTS)
def test_every_model_gives_one_finite_logit_per_sample(name):
    batch = random_batch()
    logits = build(name)(batch)
    assert logits.shape == (len(batch),) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_padding_never_changes_an_output(name):
    model, batch = build(name), random_batch()
    torch.testing.assert_close(model(padded(batch, 3)), model(batch), rtol=0, atol=1e-6)


EDGES = {m: [-0.5, -0.1, 0.2, 0.6] for m in MODALITIES}  # B - 1 = 4 boundaries, as a samples commit records them
SHORT = 4  # L: the request's history holds 6 items, the long history; the attention reads the newest 4


def request(n: int = 12, length: int = 6, seed: int = 3) -> tuple[Items, Items]:
    g = torch.Generator().manual_seed(seed)

    def items(count: int) -> Items:
        vectors = {m: torch.nn.functional.normalize(torch.randn(count, CFG.vector_dim, generator=g), dim=1) for m in MODALITIES}
        present = {m: torch.rand(count, generator=g) > 0.25 for m in MODALITIES}
        present["fused"][:] = True  # every item has a fused vector (text alone suffices)
        return Items(torch.randint(1, CFG.vocab_size, (count,), generator=g), vectors, present)

    return items(length), items(n)


@pytest.mark.parametrize(
    "name,scorer",
    [
        ("dmf_gate", DecoupledScorer),
        ("dmf_concat", DecoupledScorer),
        ("dmf_sum", DecoupledScorer),
        ("dmf_no_buckets", DecoupledScorer),
        ("dmf_early_fusion", EarlyFusionScorer),
        ("dmf_ids_only", DecoupledScorer),
    ],
)
def test_serving_scores_equal_the_training_forward_pass(name, scorer):
    model = build(name)
    history, candidates = request()
    serving = scorer(model, EDGES, SHORT)
    features = request_features(history, candidates, serving.edges, SHORT, model.cfg.top_k)
    context = torch.randn(len(candidates.ids), model.cfg.context_features) if model.cfg.context_features else None
    with torch.no_grad():
        trained = model(training_batch(history, candidates, features, SHORT, context))
    torch.testing.assert_close(serving.score(history, candidates, context=context), trained, rtol=0, atol=1e-5)
    catalog_terms = serving.item_terms(candidates.vectors["fused"])  # as a server precomputes them
    torch.testing.assert_close(serving.score(history, candidates, catalog_terms, context), trained, rtol=0, atol=1e-5)
    if context is not None:
        with pytest.raises(ValueError, match="takes context features"):
            serving.score(history, candidates)
    assert (features.buckets["image"] == -1).any()  # some items lack an image: masked, not bucket 0
    assert features.buckets["text"].shape == features.sims["text"].shape == (len(candidates.ids), SHORT)
    # the histograms count the whole (long) history of 6 items, as `samples` does
    full = candidates.vectors["text"] @ history.vectors["text"].T
    valid = candidates.present["text"][:, None] & history.present["text"][None, :]
    counts = torch.stack(
        [
            torch.bincount(torch.from_numpy(bucket_of(row[ok].numpy(), serving.edges["text"])), minlength=CFG.buckets)
            for row, ok in zip(full, valid, strict=True)
        ]
    ).float()
    torch.testing.assert_close(features.sim_hist["text"], counts / counts.sum(1, keepdim=True).clamp(min=1))
    if model.cfg.top_k:  # the count and the K largest similarities, 0 past the real ones
        torch.testing.assert_close(features.sim_top["text"][:, 0], torch.log1p(valid.sum(1).float()))
        largest = [torch.sort(row[ok], descending=True).values[: model.cfg.top_k] for row, ok in zip(full, valid, strict=True)]
        expected = torch.stack([torch.nn.functional.pad(v, (0, model.cfg.top_k - len(v))) for v in largest])
        torch.testing.assert_close(features.sim_top["text"][:, 1:], expected)


def test_a_scorer_refuses_bucket_edges_that_do_not_fit_the_model():
    with pytest.raises(ValueError, match=r"needs 4 bucket edges .* missing: \['fused'\], wrong length: \['image'\]"):
        DecoupledScorer(build("dmf_gate"), {"text": EDGES["text"], "image": [0.0]}, SHORT)
