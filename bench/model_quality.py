"""Model quality on the real data: DMF against the baselines and the other models, under the
config's evaluation protocol, with user-bootstrap intervals (what `dmf compare` computes).

    python -m bench.model_quality [--quick | --tiny] [--config conf/local.yaml] [--seeds 0,1,2] [--model M ...]
    python -m bench.model_quality --from-report reports/compare/compare-<stamp>.json

Needs the lake that `make demo` builds, except `--tiny`, which builds a tiny one of its own (random
events and item vectors through the real feature job, `dmf_features.testing.tiny_lake`) in a
temporary folder. The ratio is DMF's pooled test AUC over the best baseline's (popularity, item
mean, logistic regression on ids, LightGBM); the figures hold every model's metrics and paired
difference from DMF, overall and on cold-start and rare items. `--from-report` records a
comparison that `dmf compare` already wrote (same code, same figures) instead of training again;
`--quick` and `--tiny` train DMF alone with one seed and write `model_quality.<size>.json`. A report
of `dmf compare --item-vectors frozen --item-vectors aligned` is recorded under `item_vectors`, beside
the model comparison already in the file (ratio: DMF's AUC on aligned over frozen vectors).
The comparison's figure is copied beside the JSON (`model_quality.png`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.common import final_line, parser, write_results
from models.baselines import BASELINES

NAME = "model_quality"
PROJECT = Path(__file__).resolve().parent.parent
FULL_MODELS = ("din", "din_multimodal", "modality_centric", "dmf", "dmf_no_context")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    options = parser(
        NAME,
        __doc__,
        quick="DMF only, seed 0, 200 bootstrap resamples",
        tiny="DMF only, seed 0, on a tiny lake built in a temporary folder (no --config)",
    )
    options.add_argument("--config", type=Path, default=PROJECT / "conf" / "local.yaml")
    options.add_argument("--seeds", default="0,1,2")
    options.add_argument("--model", dest="models", action="append", help=f"default: {', '.join(FULL_MODELS)}")
    options.add_argument("--from-report", type=Path, help="record this `dmf compare` JSON instead of training")
    options.add_argument("--trained-at", help="with --from-report: the commit the comparison ran at")
    return options.parse_args(argv)


def tiny_config(folder: Path) -> Path:
    """Build the tiny lake under `folder` (Spark only for that) and return its config."""
    from dmf_features.infra.config import SparkConfig
    from dmf_features.infra.spark import get_spark
    from dmf_features.testing.tiny_lake import build_tiny_lake

    spark = get_spark(
        SparkConfig(
            master="local[2]",
            shuffle_partitions=2,
            driver_memory="2g",
            conf={"spark.ui.enabled": "false", "spark.local.dir": str(folder)},
        )
    )
    try:
        return build_tiny_lake(spark, folder)
    finally:
        spark.stop()


def run_comparison(args: argparse.Namespace, config: Path) -> dict:
    from dmf_features.infra.config import load_config
    from models.config import load_model_spec
    from models.experiment import DataSource, Evaluation, compare
    from models.tracking import Tracker

    overrides = ["evaluation.bootstrap_resamples=200"] if args.size == "quick" else []
    cfg = load_config(config, overrides)
    lake = cfg.lake.uri.rstrip("/")
    evaluation = Evaluation(
        DataSource(
            f"{lake}/samples",
            f"{lake}/item_embeddings",
            storage_options=dict(cfg.lake.storage_options) or None,
            evaluation=cfg.evaluation,
        )
    )
    small = args.size != "full"
    models = ["dmf"] if small else (args.models or list(FULL_MODELS))
    seeds = (0,) if small else tuple(int(s) for s in args.seeds.split(","))
    return compare(
        [load_model_spec(m) for m in models],
        list(BASELINES),
        evaluation,
        Tracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment),
        Path(cfg.root) / "reports" / "compare",
        seeds,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dmf-bench-model-quality-") as tmp:
        if args.from_report:
            result = json.loads(args.from_report.read_text())
        else:
            result = run_comparison(args, tiny_config(Path(tmp)) if args.size == "tiny" else args.config)
        record(args, result)


def record(args: argparse.Namespace, result: dict) -> None:
    """Write the results file and the figure beside it; print the final line."""
    if "vector_differences" in result:
        record_item_vectors(args, result)
        return
    overall = result["subsets"]["all"]["models"]
    baseline_auc = {name: overall[name]["auc"]["estimate"] for name in BASELINES if name in overall}
    best_baseline = max(baseline_auc, key=baseline_auc.get)
    ratio = overall["dmf"]["auc"]["estimate"] / baseline_auc[best_baseline]
    settings = {
        "source": str(args.from_report) if args.from_report else "trained in this run",
        "trained_at_commit": args.trained_at if args.from_report else "this commit",
        "protocol": result["protocol"],
        "folds": result["folds"],
        "seeds": result["seeds"],
        "samples_version": result["samples_version"],
    }
    figures = {
        "ratio": round(ratio, 4),
        "best_baseline": best_baseline,
        "reference": result["reference"],
        "subsets": result["subsets"],
    }
    path = write_results(NAME, figures, settings, ["torch", "lightgbm", "scikit-learn"], args)
    report = args.from_report or Path(result["report"])
    shutil.copyfile(report.with_suffix(".png"), path.with_suffix(".png"))  # the figure the README shows
    print(f"results: {path}")
    diff = result["subsets"]["all"]["differences"][best_baseline]["auc"]
    cold = result["subsets"]["cold"]["models"]
    print(
        final_line(
            NAME,
            ratio,
            {
                "dmf_auc": overall["dmf"]["auc"]["estimate"],
                f"{best_baseline}_auc": baseline_auc[best_baseline],
                "diff_low": diff["low"],
                "diff_high": diff["high"],
                "dmf_cold_auc": cold["dmf"]["auc"]["estimate"],
                f"{best_baseline}_cold_auc": cold[best_baseline]["auc"]["estimate"],
            },
        )
    )


def record_item_vectors(args: argparse.Namespace, result: dict) -> None:
    """A `dmf compare --item-vectors frozen --item-vectors aligned` report goes into the results file beside
    the model comparison already there, under `item_vectors` (figure: `model_quality_item_vectors.png`).
    The ratio is DMF's pooled test AUC on aligned vectors over its AUC on frozen ones."""
    path = args.results_dir / (f"{NAME}.json" if args.size == "full" else f"{NAME}.{args.size}.json")
    existing = json.loads(path.read_text()) if path.exists() else {"figures": {}, "settings": {}}
    comparison = {
        "source": str(args.from_report) if args.from_report else "trained in this run",
        "trained_at_commit": args.trained_at if args.from_report else "this commit",
        **{key: result[key] for key in ("folds", "seeds", "samples_version", "item_vectors", "subsets", "vector_differences")},
    }
    path = write_results(
        NAME, {**existing["figures"], "item_vectors": comparison}, existing["settings"], ["torch", "lightgbm"], args
    )
    report = args.from_report or Path(result["report"])
    shutil.copyfile(report.with_suffix(".png"), path.with_name(f"{path.stem}_item_vectors.png"))
    print(f"results: {path}")
    models, differences = result["subsets"]["all"]["models"], result["vector_differences"]
    print(
        final_line(
            NAME,
            models["dmf@aligned"]["auc"]["estimate"] / models["dmf"]["auc"]["estimate"],
            {
                "dmf_frozen_auc": models["dmf"]["auc"]["estimate"],
                "dmf_aligned_auc": models["dmf@aligned"]["auc"]["estimate"],
                **{
                    f"{subset}_diff{bound}": differences[subset]["dmf@aligned"]["auc"][key]
                    for subset in ("all", "cold")
                    for bound, key in (("", "estimate"), ("_low", "low"), ("_high", "high"))
                },
            },
        )
    )


if __name__ == "__main__":
    main()
