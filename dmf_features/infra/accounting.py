"""Where every row of a stage run went: rows in = rows written + rows quarantined, printed at the end
of each run and logged to MLflow (experiment `<mlflow.experiment>-pipeline`, one run per stage run),
so that a lost row shows as an unbalanced line, and a dirty source as a trend in the MLflow UI.

Ingest counts input records in the run's scope; embed counts the items of each content modality it
had to embed (not those unchanged since an earlier run); features counts the events in scope plus
the negatives it sampled. `resolved` counts quarantine rows removed because their record is now kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dmf_features.infra.config import MlflowConfig


@dataclass(frozen=True)
class StageAccount:
    stage: str
    scope: str
    rows_in: int
    written: int
    quarantined: int
    resolved: int = 0

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.written + self.quarantined

    def render(self) -> str:
        verdict = "balanced" if self.balanced else f"UNBALANCED by {self.rows_in - self.written - self.quarantined:,}"
        return (
            f"accounting ({self.stage}, {self.scope}): {self.rows_in:,} rows in = {self.written:,} written + "
            f"{self.quarantined:,} quarantined ({verdict}); {self.resolved:,} quarantine rows resolved"
        )

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items() if isinstance(v, int)}


def pipeline_experiment(cfg: MlflowConfig) -> str:
    return f"{cfg.experiment}-pipeline"


def log_account(cfg: MlflowConfig, account: StageAccount, table_versions: dict[str, int | None]) -> str:
    """Log `account` as one MLflow run (tagged with the stage, scope and the table versions the run
    left); its run id."""
    import mlflow

    client = mlflow.MlflowClient(cfg.tracking_uri)
    name = pipeline_experiment(cfg)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    tags = {"dmf.stage": account.stage, "dmf.scope": account.scope, "dmf.balanced": str(account.balanced).lower()}
    tags |= {f"dmf.version.{t}": str(v) for t, v in table_versions.items() if v is not None}
    run = client.create_run(experiment_id, run_name=f"{account.stage} {account.scope}", tags=tags)
    for key, value in account.metrics().items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED" if account.balanced else "FAILED")
    return run.info.run_id
