"""Scoring one user's request: the user's `user_sequences` row and N candidates.

All N x L_long similarities per modality come from one matrix product; the first L give each
candidate's `sim` and `bucket`, all of them its `hist`, as in `samples`. `DecoupledScorer` (DMF)
projects the history once per request and adds per candidate only bucket-embedding lookups;
`EarlyFusionScorer` (the paper's baseline) must project [e_j, similarities] for every candidate.
Both give the scores of their models' training forward passes (tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dmf_features.features.kernels.similarity import FeatureShape, similarity_features
from models.batch import TARGET_VECTOR_MODALITY, CTRBatch
from models.data import ItemVectorTable, Vocabulary, similarity_tensors
from models.dmf import DMF, DMFEarlyFusion, similarity_inputs


@dataclass
class Items:
    """Item ids (model vocabulary) with their vectors per modality and whether each item has one."""

    ids: torch.Tensor  # [n]
    vectors: dict[str, torch.Tensor]  # m -> [n, D_m], rows of absent items are ignored
    present: dict[str, torch.Tensor]  # m -> [n] bool

    @classmethod
    def from_catalog(cls, item_ids: np.ndarray, vocabulary: Vocabulary, catalog: Mapping[str, ItemVectorTable]) -> Items:
        """Items by raw id: their model vocabulary indices, and per modality their vectors from the
        catalog (the item_embeddings versions the model was trained with); an item without one is absent."""
        item_ids = np.asarray(item_ids, np.int64)
        return cls(
            torch.from_numpy(vocabulary.index(item_ids)),
            {m: torch.from_numpy(table.lookup(item_ids)) for m, table in catalog.items()},
            {m: torch.from_numpy(table.contains(item_ids)) for m, table in catalog.items()},
        )


def request_history(user_sequence: Mapping, vocabulary: Vocabulary, catalog: Mapping[str, ItemVectorTable]) -> Items:
    """A user's `user_sequences` row (its columns by name) as a request's history: the long history,
    newest first, whose first `history_length` items are the short history the attention reads.
    Vectors come from the catalog, as the candidates' do, so that they are the ones the model was
    trained with even when the row was built from other encoder versions."""
    return Items.from_catalog(user_sequence["long_hist_item_ids"], vocabulary, catalog)


@dataclass
class RequestFeatures:
    sims: dict[str, torch.Tensor]  # m -> [N, L], 0 where masked
    buckets: dict[str, torch.Tensor]  # m -> [N, L], -1 where masked
    sim_hist: dict[str, torch.Tensor]  # m -> [N, B], over the whole (long) history
    sim_top: dict[str, torch.Tensor]  # m -> [N, 1 + K]: log(1 + unmasked positions), K largest similarities


def request_features(
    history: Items, candidates: Items, edges: Mapping[str, np.ndarray], history_length: int, top_k: int = 0
) -> RequestFeatures:
    """What `samples` holds for each candidate as the target, from one [N, D] x [D, L_long] product
    per modality of `edges` (m -> its B - 1 bucket boundaries), through the feature job's own
    definition (`similarity_features`) and the training batches' conversion (`similarity_tensors`)."""
    features = {}
    for modality, boundaries in edges.items():
        valid = (candidates.present[modality][:, None] & history.present[modality][None, :]).numpy()
        sims = (candidates.vectors[modality] @ history.vectors[modality].T).numpy()
        shape = FeatureShape(history_length, sims.shape[1], len(boundaries) + 1, top_k)
        features[modality], _ = similarity_features(sims, valid, boundaries, shape)
    return RequestFeatures(**similarity_tensors(features))


def training_batch(
    history: Items, candidates: Items, features: RequestFeatures, history_length: int, context: torch.Tensor | None = None
) -> CTRBatch:
    """The same request as a training batch: one row per candidate, the (short) history repeated."""
    n, short = len(candidates.ids), history.ids[:history_length]
    return CTRBatch(
        user_ids=torch.zeros(n, dtype=torch.long),
        target_ids=candidates.ids,
        hist_ids=short.expand(n, len(short)),
        hist_mask=torch.ones(n, len(short), dtype=torch.bool),
        buckets=features.buckets,
        sims=features.sims,
        sim_hist=features.sim_hist,
        sim_top=features.sim_top,
        target_vectors=candidates.vectors.get(TARGET_VECTOR_MODALITY),
        context=context,
    )


class _Scorer:
    def __init__(self, model: DMF, bucket_edges: Mapping[str, Sequence[float]], history_length: int):
        """`bucket_edges` and `history_length` (L): what the model's training samples were built with
        (the samples commit's lineage records them; so does the logged model's meta.json)."""
        self.model, self.history_length = model.eval(), history_length
        missing = [m for m in model.cfg.modalities if m not in bucket_edges]
        wrong = [m for m in model.cfg.modalities if m in bucket_edges and len(bucket_edges[m]) != model.cfg.buckets - 1]
        if missing or wrong:
            raise ValueError(
                f"the model needs {model.cfg.buckets - 1} bucket edges for each of "
                f"{list(model.cfg.modalities)}; missing: {missing}, wrong length: {wrong}"
            )
        self.edges = {m: np.asarray(bucket_edges[m], np.float32) for m in model.cfg.modalities}

    @torch.inference_mode()
    def item_terms(self, vectors: torch.Tensor) -> torch.Tensor | None:
        """The modality path's per-item term of items with these (fused) vectors. It depends on the
        item alone, so a server computes it once per catalog and passes the candidates' rows to
        `score`, saving the largest per-candidate product of a request."""
        path = self.model.modality_path
        return None if path is None else path.item_term(vectors)

    def _finish(
        self,
        target: torch.Tensor,
        interest: torch.Tensor,
        history: Items,
        candidates: Items,
        features: RequestFeatures,
        item_terms: torch.Tensor | None,
        context: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.model.cfg.context_features and context is None:
            raise ValueError(
                "this model takes context features (the user's and candidates' point-in-time "
                "statistics, models.prior_stats): pass `context`"
            )
        batch = training_batch(history, candidates, features, self.history_length, context)
        return self.model.combine(target, interest, batch, item_terms).squeeze(-1)


class DecoupledScorer(_Scorer):
    """DMF at serving time. With K_j = W_K e_j + sum_m P_K^m[b_jm] and V_j likewise, attention never
    needs the [N, L, a] keys and values: q.K_j = q.(W_K e_j) + sum_m (q.P_K^m)[b_jm], where q.P_K^m
    is [N, B+1], and sum_j w_j V_j = w.(W_V e) + sum_m (w summed per bucket) . P_V^m. Per candidate
    the work is a few [N, L] gathers and scatters; the history is projected once per request."""

    @torch.inference_mode()
    def score(
        self, history: Items, candidates: Items, item_terms: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [N] of the candidates for this user (`item_terms`: see `item_terms`; `context`: [N, C]
        the user's and each candidate's statistics, for a model trained with them)."""
        model = self.model
        features = request_features(history, candidates, self.edges, self.history_length, self.model.cfg.top_k)
        keys, values = model.history_projections(history.ids[: self.history_length])  # [L, a], once per request
        target = model.target(candidates.ids, candidates.vectors.get(TARGET_VECTOR_MODALITY))
        query = model.query(target)  # [N, a]
        scores = query @ keys.T  # [N, L]
        tables = []
        if model.bucket_keys is not None:
            for modality in model.cfg.modalities:
                index = features.buckets[modality].masked_fill(features.buckets[modality] < 0, model.cfg.buckets)
                key_table = model.bucket_keys.tables[modality].weight  # [B+1, a]
                scores = scores + torch.gather(query @ key_table.T, 1, index)
                tables.append((index, model.bucket_values.tables[modality].weight))
        weights = torch.softmax(scores / math.sqrt(model.cfg.attention_dim), dim=-1)
        interest = weights @ values
        for index, value_table in tables:
            per_bucket = torch.zeros(len(index), value_table.shape[0]).scatter_add_(1, index, weights)
            interest = interest + per_bucket @ value_table
        return self._finish(target, interest, history, candidates, features, item_terms, context)


class EarlyFusionScorer(_Scorer):
    model: DMFEarlyFusion

    @torch.inference_mode()
    def score(
        self, history: Items, candidates: Items, item_terms: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        model = self.model
        features = request_features(history, candidates, self.edges, self.history_length, self.model.cfg.top_k)
        n = len(candidates.ids)
        embedded = model.items(history.ids[: self.history_length]).expand(n, -1, -1)
        inputs = torch.cat([embedded, similarity_inputs(features.buckets, features.sims, model.cfg.modalities)], dim=-1)
        keys, values = model.key(inputs), model.value(inputs)  # [N, L, a]: recomputed per candidate
        target = model.target(candidates.ids, candidates.vectors.get(TARGET_VECTOR_MODALITY))
        mask = torch.ones(keys.shape[:2], dtype=torch.bool)
        interest = model.attend(target, keys, values, mask)
        return self._finish(target, interest, history, candidates, features, item_terms, context)
