"""A user's top-k items from a registered model: what a serving endpoint does with the scorers.

The model comes from MLflow with what its training samples were built with (`meta.json`: bucket
edges, history length, item-vector versions); the user's history from `user_sequences`; the
candidates are every catalog item with a vector, less the items in the user's history, all scored
in one request by the model's scorer (`models/serving.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import pyarrow.compute as pc
import torch

from dmf_features.infra.runs import complete_version
from dmf_features.schemas import USER_SEQUENCES
from models.batch import TARGET_VECTOR_MODALITY
from models.data import ItemVectorTable, PinnedTable
from models.dmf import DMF, DMFEarlyFusion
from models.serving import DecoupledScorer, EarlyFusionScorer, Items, request_history

_SERVING_META = ("bucket_edges", "history_length", "item_embeddings_version", "item_vectors")


@dataclass(frozen=True)
class Recommendation:
    item_id: int
    probability: float


def recommend(
    model_uri: str, lake_root: str, user_id: int, k: int = 10, storage_options: dict | None = None
) -> list[Recommendation]:
    """The `k` catalog items with the highest click probability for `user_id`, best first.
    `model_uri`: an MLflow model URI such as `models:/dmf/3` or `models:/dmf/latest`."""
    try:
        served = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except mlflow.exceptions.MlflowException as e:  # no such model or version
        raise LookupError(f"{model_uri}: {e.message}") from e
    meta, model = served.meta, served.model
    if not isinstance(model, DMF):
        raise LookupError(f"{model_uri} is a {type(model).__name__}: the scorers serve DMF, its ablations and dmf_early_fusion")
    missing = [key for key in _SERVING_META if meta.get(key) is None]
    if missing:
        raise LookupError(f"{model_uri} was logged without {missing} (an earlier version): train it again")
    scorer_class = EarlyFusionScorer if isinstance(model, DMFEarlyFusion) else DecoupledScorer
    scorer = scorer_class(model, meta["bucket_edges"], meta["history_length"])
    embeddings = PinnedTable.open(f"{lake_root}/item_embeddings", meta["item_embeddings_version"], storage_options)
    catalog = {
        m: ItemVectorTable.load(embeddings, m, meta["item_vectors"][m])
        for m in model.cfg.modalities
        if m != TARGET_VECTOR_MODALITY
    }
    catalog[TARGET_VECTOR_MODALITY] = served.vectors  # logged with the model: the targets' vectors
    sequences_version = complete_version(lake_root, USER_SEQUENCES.name, storage_options)  # never a half-written run's
    row = _user_sequence(PinnedTable.open(f"{lake_root}/user_sequences", sequences_version, storage_options), user_id)
    history = request_history(row, served.vocabulary, catalog)
    items = catalog[TARGET_VECTOR_MODALITY].ids
    unseen = items[~np.isin(items, np.asarray(row["long_hist_item_ids"], np.int64))]
    context = None
    if served.prior_stats is not None:  # the statistics as of the newest event the model was trained with
        now = np.full(len(unseen), np.iinfo(np.int64).max // 2)
        context = torch.from_numpy(served.prior_stats.features(np.full(len(unseen), user_id), unseen, now))
    candidates = Items.from_catalog(unseen, served.vocabulary, catalog)
    probabilities = torch.sigmoid(scorer.score(history, candidates, context=context))
    best = torch.topk(probabilities, min(k, len(unseen)))
    return [Recommendation(int(unseen[i]), float(p)) for p, i in zip(best.values, best.indices, strict=True)]


def _user_sequence(table: PinnedTable, user_id: int) -> dict:
    for batch in table.batches(["user_id", "long_hist_item_ids"], 1_024):
        if "long_hist_item_ids" not in batch.schema.names:  # pyarrow leaves out a column a file lacks
            raise LookupError(
                "user_sequences has no long_hist_item_ids (an earlier version built it): run `dmf features` to rebuild it"
            )
        found = batch.filter(pc.equal(batch.column("user_id"), user_id))
        if found.num_rows:
            return found.to_pylist()[0]
    raise LookupError(f"user {user_id} has no row in user_sequences (no behaviour yet)")
