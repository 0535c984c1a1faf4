"""The Spark-free contract: what the trainer and the numpy kernels may import, and the lineage record."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import dmf_features.embedding.encoders
import dmf_features.features.kernels
import models
from dmf_features import schemas
from dmf_features.infra.lake import spark_schema

ROOT = Path(__file__).resolve().parents[1]


def _modules(package) -> list[str]:
    return [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]


def test_models_kernels_encoders_and_the_contract_import_without_pyspark():
    spark_free = [
        *_modules(models),
        *_modules(dmf_features.features.kernels),
        "dmf_features.schemas",
        *_modules(dmf_features.embedding.encoders),
        "dmf_features.infra.config",
    ]
    # pyspark made unimportable: any import of it, direct or through a project module, fails the run
    code = "import sys, importlib; sys.modules['pyspark'] = None\n" + "".join(
        f"importlib.import_module({name!r})\n" for name in spark_free
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "models.experiment" in spark_free and "dmf_features.features.kernels.similarity" in spark_free


def test_every_table_converts_to_spark_with_its_columns_in_order():
    for spec in (
        schemas.ITEMS,
        schemas.EVENTS,
        schemas.QUARANTINE,
        schemas.ITEM_EMBEDDINGS,
        schemas.SAMPLES,
        schemas.USER_SEQUENCES,
        schemas.VALIDATION_RESULTS,
    ):
        converted = spark_schema(spec)
        assert tuple(converted.fieldNames()) == spec.columns
        assert set(spec.keys) | set(spec.partition_by) <= set(spec.columns)
    samples = spark_schema(schemas.SAMPLES)
    assert samples["fused_topk_ids"].dataType.simpleString() == "array<bigint>"
    assert samples["event_time"].dataType.simpleString() == "timestamp"


def test_samples_hold_every_feature_of_every_modality():
    for modality in schemas.MODALITIES:
        for feature in schemas.FEATURES:
            assert schemas.feature_column(modality, feature) in schemas.SAMPLES.columns


def test_lineage_round_trips_through_its_json_and_reads_the_feature_settings():
    lineage = schemas.Lineage(
        3,
        7,
        {"text": "minilm@1"},
        "all dates",
        {"history_length": 50, "buckets": 10, "top_k": 5, "long_history_length": 500},
        {"text": [0.1, 0.2]},
    )
    again = schemas.Lineage.from_json(lineage.to_json())
    assert again == lineage
    assert (again.history_length, again.buckets, again.top_k) == (50, 10, 5)
