"""The promotion gate: a newly trained model becomes the registered model's `champion` only if it
beats the current champion and the item-mean baseline on the same rows.

The rows are those of the candidate's samples version that are newer than everything either model
trained or validated on (each run records that time, `TRAINED_THROUGH_TAG`), so neither model has seen
them; both are scored through their logged pyfunc, exactly as a server would. The item mean is fitted on
the rows before those. The decision, its reason and the figures (with paired user-bootstrap intervals)
go onto the candidate's MLflow run and model version, whether it is promoted or refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dmf_features.schemas import MODALITIES
from models.baselines import smoothed_item_means
from models.data import PinnedTable, epoch_seconds, sample_columns
from models.intervals import bootstrap_metrics, format_interval, to_json_ready
from models.splits import SampleIndex
from models.tracking import TRAINED_THROUGH_TAG, request_frame

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from dmf_features.infra.config import Config

CANDIDATE, CHAMPION, ITEM_MEAN = "candidate", "champion", "item_mean"
_SCORE_ROWS = 50_000  # rows per pyfunc call: bounded memory on a large comparison


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    model: str
    alias: str
    candidate_version: str
    champion_version: str | None
    rows: int = 0
    users: int = 0
    auc: dict[str, dict] = field(default_factory=dict)  # model -> {"estimate", "low", "high"}
    differences: dict[str, dict] = field(default_factory=dict)  # candidate minus model -> interval
    note: str = ""  # how the comparison was made, when not the usual way

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Decision:
        return cls(**json.loads(text))

    def render(self) -> str:
        verdict = "PROMOTED" if self.promote else "REFUSED"
        lines = [f"{self.model} version {self.candidate_version}: {verdict} ({self.reason})"]
        if self.rows:
            lines.append(f"  compared on {self.rows:,} rows of {self.users:,} users that neither model trained on:")
            if self.note:
                lines.append(f"  ({self.note})")
            for name, interval in self.auc.items():
                diff = self.differences.get(name)
                versus = f"   candidate minus this: {format_interval(diff, signed=True)}" if diff else ""
                lines.append(f"  {name:<10} AUC {format_interval(interval)}{versus}")
        return "\n".join(lines)


def train_candidate(cfg: Config, seed: int = 0) -> dict:
    """Train and register the config's promotion model on the latest samples: {"run_id", "version"}."""
    from models.config import load_model_spec
    from models.experiment import open_training, train_run

    evaluation, tracker = open_training(cfg)
    result = train_run(load_model_spec(cfg.promotion.model), seed, evaluation, tracker)
    print(
        f"trained {result.spec} version {result.model_version} (MLflow run {result.run_id}); "
        f"test AUC {result.metrics['test_auc']:.4f}"
    )
    return {"run_id": result.run_id, "version": result.model_version}


def evaluate_candidate(cfg: Config, version: str | None = None) -> Decision:
    """Compare registered `version` (default: the newest) with the champion and the item mean; record
    the decision on its run and model version. Promoting is `promote`'s job."""
    client = _client(cfg)
    decision = decide(cfg, client, version)
    _record(client, decision)
    return decision


def promote(cfg: Config, decision: Decision) -> None:
    """Point the alias at the candidate of an accepted decision."""
    if not decision.promote:
        raise ValueError(f"version {decision.candidate_version} was refused: {decision.reason}")
    client = _client(cfg)
    client.set_registered_model_alias(decision.model, decision.alias, decision.candidate_version)
    print(f"{decision.model}@{decision.alias} is now version {decision.candidate_version}")


def decide(cfg: Config, client: MlflowClient, version: str | None = None) -> Decision:
    from mlflow.exceptions import MlflowException

    name, alias, gate = cfg.promotion.model, cfg.promotion.alias, cfg.promotion
    if version is None:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise LookupError(f"no registered model {name!r}: train one first (`dmf train --model {name}`)")
        version = str(max(int(v.version) for v in versions))
    candidate = client.get_model_version(name, version)
    try:
        champion = client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no champion yet
        champion = None
    verdict = {"model": name, "alias": alias, "candidate_version": str(version)}
    verdict["champion_version"] = str(champion.version) if champion else None
    if champion is not None and str(champion.version) == str(version):
        return Decision(False, f"version {version} already is {alias}", **verdict)

    runs = {CANDIDATE: client.get_run(candidate.run_id)}
    if champion is not None:
        runs[CHAMPION] = client.get_run(champion.run_id)
    cutoff = max(int(run.data.tags.get(TRAINED_THROUGH_TAG, 0)) for run in runs.values())

    def samples_of(run) -> PinnedTable:
        uri = f"{cfg.lake.uri.rstrip('/')}/samples"
        return PinnedTable.open(uri, int(run.data.tags["lineage.samples_version"]), dict(cfg.lake.storage_options) or None)

    samples = samples_of(runs[CANDIDATE])
    rows = champion_rows = _rows_after(samples, cutoff)
    if champion is not None and _item_vectors(runs[CHAMPION]) != _item_vectors(runs[CANDIDATE]):
        # other encoder versions (a roll-out): the champion's similarity features are those of its own
        # samples version, so each model is scored on the rows both versions hold, with its own features
        rows, champion_rows = common_rows(rows, _rows_after(samples_of(runs[CHAMPION]), cutoff))
        verdict["note"] = (
            f"the champion was trained on other item vectors ({_item_vectors(runs[CHAMPION])}): it is scored "
            f"on the same events with the features of its own samples v{runs[CHAMPION].data.tags['lineage.samples_version']}"
        )
    if rows.num_rows < gate.min_rows:
        return Decision(
            False,
            f"only {rows.num_rows:,} rows of samples v{samples.version} are newer than both models' training data "
            f"(promotion.min_rows is {gate.min_rows:,}): wait for more data",
            **verdict,
        )

    labels = rows.column("label").to_numpy().astype(float)
    items, users = rows.column("item_id").to_numpy(), rows.column("user_id").to_numpy()
    index = SampleIndex.read(samples)
    earlier = index.seconds <= cutoff
    scores = {CANDIDATE: _pyfunc_scores(f"models:/{name}/{version}", rows)}
    if champion is not None:
        scores[CHAMPION] = _pyfunc_scores(f"models:/{name}/{champion.version}", champion_rows)
    scores[ITEM_MEAN] = smoothed_item_means(index.item_ids[earlier], index.labels[earlier], items)
    result = to_json_ready(
        bootstrap_metrics(
            users,
            labels,
            {k: [v] for k, v in scores.items()},
            CANDIDATE,
            resamples=cfg.evaluation.bootstrap_resamples,
            metrics=("auc",),
        )
    )
    auc = {model: metrics["auc"] for model, metrics in result["models"].items()}
    differences = {model: metrics["auc"] for model, metrics in result["differences"].items()}
    mine = auc[CANDIDATE]["estimate"]
    failures = []
    if champion is not None and not mine > auc[CHAMPION]["estimate"] + gate.min_auc_gain:
        failures.append(
            f"AUC {mine:.4f} does not beat the champion (version {champion.version}) {auc[CHAMPION]['estimate']:.4f}"
            + (f" by more than promotion.min_auc_gain {gate.min_auc_gain}" if gate.min_auc_gain else "")
        )
    if not mine > auc[ITEM_MEAN]["estimate"]:
        failures.append(f"AUC {mine:.4f} does not beat the item-mean baseline {auc[ITEM_MEAN]['estimate']:.4f}")
    if failures:
        reason = "; ".join(failures)
    elif champion is None:
        reason = f"no {alias} yet, and AUC {mine:.4f} beats the item mean {auc[ITEM_MEAN]['estimate']:.4f}"
    else:
        reason = (
            f"AUC {mine:.4f} beats the champion {auc[CHAMPION]['estimate']:.4f} "
            f"and the item mean {auc[ITEM_MEAN]['estimate']:.4f}"
        )
    return Decision(not failures, reason, **verdict, rows=len(labels), users=result["users"], auc=auc, differences=differences)


def _rows_after(samples: PinnedTable, cutoff: int) -> pa.Table:
    """The rows (every model input column) with an event time after `cutoff` (epoch seconds)."""
    parts = []
    columns = ["sample_id", *(c for c in sample_columns(MODALITIES) if c != "sample_id")]
    for records in samples.batches(columns, 65_536):
        keep = epoch_seconds(records.column("event_time")) > cutoff
        if keep.any():
            parts.append(records.filter(pa.array(keep)))
    if not parts:
        return pa.table(
            {"sample_id": pa.array([], pa.string()), **{c: pa.array([], pa.int64()) for c in ("user_id", "item_id", "label")}}
        )
    return pa.Table.from_batches(parts)


def common_rows(candidate: pa.Table, champion: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The rows of both tables whose sample ids both hold, each ordered by sample id (so aligned row by row)."""
    shared = pc.unique(
        candidate.column("sample_id").filter(pc.is_in(candidate.column("sample_id"), value_set=champion.column("sample_id")))
    )

    def aligned(table: pa.Table) -> pa.Table:
        return table.filter(pc.is_in(table.column("sample_id"), value_set=shared)).sort_by("sample_id")

    return aligned(candidate), aligned(champion)


def _item_vectors(run) -> dict[str, str]:
    """The item-vector versions a run's samples were built from (its lineage tags)."""
    prefix = "lineage.item_vectors."
    return {k[len(prefix) :]: v for k, v in run.data.tags.items() if k.startswith(prefix)}


def _pyfunc_scores(model_uri: str, rows: pa.Table) -> np.ndarray:
    import mlflow

    model = mlflow.pyfunc.load_model(model_uri)
    parts = [
        np.asarray(model.predict(request_frame(rows.slice(start, _SCORE_ROWS))), np.float64).reshape(-1)
        for start in range(0, rows.num_rows, _SCORE_ROWS)
    ]
    return np.concatenate(parts)


def _record(client: MlflowClient, decision: Decision) -> None:
    """The decision on the candidate's run (tags and metrics) and model version (tag), to browse in MLflow."""
    run_id = client.get_model_version(decision.model, decision.candidate_version).run_id
    outcome = "promoted" if decision.promote else "refused"
    client.set_tag(run_id, "gate.decision", outcome)
    client.set_tag(run_id, "gate.reason", decision.reason[:5000])
    client.set_tag(run_id, "gate.champion_version", decision.champion_version or "none")
    for model, interval in decision.auc.items():
        if interval["estimate"] is not None:
            client.log_metric(run_id, f"gate.{model}_auc", interval["estimate"])
    if decision.rows:
        client.log_metric(run_id, "gate.rows", decision.rows)
    client.set_model_version_tag(decision.model, decision.candidate_version, "gate", f"{outcome}: {decision.reason}"[:5000])


def _client(cfg: Config) -> MlflowClient:
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    return mlflow.MlflowClient(cfg.mlflow.tracking_uri)
