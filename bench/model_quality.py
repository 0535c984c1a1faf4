"""Model quality on the real data: DMF against the baselines and the other models, under the
config's evaluation protocol, with user-bootstrap intervals (what `dmf compare` computes).

    python -m bench.model_quality [--quick] [--config conf/local.yaml] [--seeds 0,1,2] [--model M ...]
    python -m bench.model_quality --from-report reports/compare/compare-<stamp>.json

Needs the lake that `make demo` builds. The ratio is DMF's pooled test AUC over the best baseline's
(popularity, item mean, logistic regression on ids, LightGBM); the figures hold every model's
metrics and paired difference from DMF, overall and on cold-start and rare items. `--from-report`
records a comparison that `dmf compare` already wrote (same code, same figures) instead of
training again; `--quick` trains DMF alone with one seed and writes `model_quality.quick.json`.
The comparison's figure is copied beside the JSON (`model_quality.png`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench.common import final_line, write_results
from models.baselines import BASELINES

NAME = "model_quality"
FULL_MODELS = ("din", "din_multimodal", "modality_centric", "dmf", "dmf_no_context")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="DMF only, seed 0, 200 bootstrap resamples")
    parser.add_argument("--config", default="conf/local.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", dest="models", action="append", help=f"default: {', '.join(FULL_MODELS)}")
    parser.add_argument("--from-report", type=Path, help="record this `dmf compare` JSON instead of training")
    parser.add_argument("--trained-at", help="with --from-report: the commit the comparison ran at")
    return parser.parse_args(argv)


def run_comparison(args: argparse.Namespace) -> dict:
    from dmf_features.infra.config import load_config
    from models.config import load_model_spec
    from models.experiment import DataSource, Evaluation, compare
    from models.tracking import Tracker

    overrides = ["evaluation.bootstrap_resamples=200"] if args.quick else []
    cfg = load_config(args.config, overrides)
    lake = cfg.lake.uri.rstrip("/")
    evaluation = Evaluation(DataSource(f"{lake}/samples", f"{lake}/item_embeddings",
                                       storage_options=dict(cfg.lake.storage_options) or None,
                                       evaluation=cfg.evaluation))
    models = ["dmf"] if args.quick else (args.models or list(FULL_MODELS))
    seeds = (0,) if args.quick else tuple(int(s) for s in args.seeds.split(","))
    return compare([load_model_spec(m) for m in models], list(BASELINES), evaluation,
                   Tracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment), Path(cfg.root) / "reports" / "compare",
                   seeds)


def main(argv=None) -> None:
    args = parse_args(argv)
    result = json.loads(args.from_report.read_text()) if args.from_report else run_comparison(args)
    overall = result["subsets"]["all"]["models"]
    baseline_auc = {name: overall[name]["auc"]["estimate"] for name in BASELINES if name in overall}
    best_baseline = max(baseline_auc, key=baseline_auc.get)
    ratio = overall["dmf"]["auc"]["estimate"] / baseline_auc[best_baseline]
    settings = {"quick": args.quick, "source": str(args.from_report) if args.from_report else "trained in this run",
                "trained_at_commit": args.trained_at if args.from_report else "this commit",
                "protocol": result["protocol"], "folds": result["folds"], "seeds": result["seeds"],
                "samples_version": result["samples_version"]}
    figures = {"ratio": round(ratio, 4), "best_baseline": best_baseline, "reference": result["reference"],
               "subsets": result["subsets"]}
    path = write_results(NAME, figures, settings, ["torch", "lightgbm", "scikit-learn"], quick=args.quick)
    report = args.from_report or Path(result["report"])
    shutil.copyfile(report.with_suffix(".png"), path.with_suffix(".png"))  # the figure the README shows
    diff = result["subsets"]["all"]["differences"][best_baseline]["auc"]
    cold = result["subsets"]["cold"]["models"]
    print(final_line(NAME, ratio, {
        "dmf_auc": overall["dmf"]["auc"]["estimate"], f"{best_baseline}_auc": baseline_auc[best_baseline],
        "diff_low": diff["low"], "diff_high": diff["high"], "dmf_cold_auc": cold["dmf"]["auc"]["estimate"],
        f"{best_baseline}_cold_auc": cold[best_baseline]["auc"]["estimate"]}))


if __name__ == "__main__":
    main()
