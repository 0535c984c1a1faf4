"""`dmf`: the command line over every stage. `jobs/*.py` are spark-submit entry points into it."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dmf_features.infra.config import Config, ConfigError, load_config
from dmf_features.infra.errors import PipelineError
from dmf_features.infra.preload import GREAT_EXPECTATIONS, MLFLOW, preload
from dmf_features.orchestration.environment import DEFAULT_AIRFLOW_HOME

DEFAULT_CONFIG = os.environ.get("DMF_CONFIG", "conf/local.yaml")

_DESCRIPTION = """\
dmf-features: batch embedding-and-feature ETL for multimodal CTR models (DMF, MIM).

Every command reads a YAML config (default: conf/local.yaml, or $DMF_CONFIG) and can override any
key with --set KEY.PATH=VALUE, e.g. --set spark.master=local[2] --set lake.uri=/data/lake.
"""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2018-09-24") from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file (default: %(default)s)")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set spark.master=local[2] (repeatable)",
    )
    scoped = argparse.ArgumentParser(add_help=False)
    when = scoped.add_mutually_exclusive_group()
    when.add_argument("--date", type=_date, help="only events of this UTC day (YYYY-MM-DD); replaces that day")
    when.add_argument("--since", type=_date, help="events of this day and later; replaces those days")
    scoped.add_argument(
        "--strict", action="store_true", default=None, help="fail, writing nothing, if any record would be quarantined"
    )

    parser = argparse.ArgumentParser(prog="dmf", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        parents=[common, scoped],
        help="the whole pipeline: ingest, validate, embed, features, train",
        description="Run every stage in order (ingest -> validate -> embed -> features -> train the DMF model of "
        "conf/train/dmf.yaml, seed 0, tracked in MLflow). Stops at the first failure.",
    )
    ingest = commands.add_parser(
        "ingest",
        parents=[common, scoped],
        help="raw sources -> items, events, quarantine Delta tables",
        description="Read the configured source (MovieLens-format folder or the synthetic generator), write "
        "items (merge), events (one partition per day) and quarantine (each rejected record with "
        "its reason), and print rows per table and quarantined rows by reason. Safe to re-run.",
    )
    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="run the Great Expectations gates on lake tables",
        description="Check tables against their expectation suites; results go to the validation_results "
        "table and a JSON file. Exits 1 when any expectation fails, naming it and its column.",
    )
    validate.add_argument(
        "--table",
        dest="tables",
        action="append",
        metavar="TABLE",
        help="table to check (repeatable; default: quality.tables in the config)",
    )

    embed = commands.add_parser(
        "embed",
        parents=[common],
        help="items -> item_embeddings (text, image, fused) and the nearest-item index",
        description="Embed item titles and images with the configured pretrained encoders inside Spark pandas UDFs "
        "(GPU when visible), merge the vectors into item_embeddings keyed by item and encoder version, "
        "quarantine inputs that cannot be embedded with the reason, and build the FAISS index. "
        "Only new or changed items are embedded.",
    )
    align = commands.add_parser(
        "align",
        parents=[common],
        help="events (training period) + item_embeddings -> behaviour-aligned vectors, a new encoder version",
        description="MIM's content-interest fine-tuning (C-SFT): per modality (alignment.modalities) train a "
        "projection head over the frozen vectors with InfoNCE on pairs of items a user clicked close together, "
        "using behaviour before the evaluation protocol's first validation boundary only (alignment.train_until "
        "overrides), and write every item's aligned vector into item_embeddings as a new encoder version, "
        "cold items included. Tracked in MLflow (experiment <mlflow.experiment>-alignment: settings, input "
        "versions, loss curves, held-out recall). A re-run with the same inputs writes only vectors that are "
        "missing. Build features on them with --set features.item_vectors=aligned. Settings: `alignment`.",
    )
    features = commands.add_parser(
        "features",
        parents=[common, scoped],
        help="events + item_embeddings -> samples (histories, DMF similarity features) and user_sequences",
        description="Build the training set `samples`: every event in scope with its point-in-time behaviour "
        "history (strictly earlier events only), its split, sampled negatives when configured, and "
        "per modality (text, image, fused) the target-aware features: similarity and bucket per "
        "history position, the similarity histogram and the top-K most similar items of the long "
        "history. --date/--since rebuild only those days (histories still reach back). Then merge "
        "`user_sequences`, each user's latest history with its items' vectors, for serving. "
        "Settings: the `features` section of the config.",
    )
    train = commands.add_parser(
        "train",
        parents=[common],
        help="train one model on samples (torch, no Spark), tracked in MLflow",
        description="Train a model of conf/train/<MODEL>.yaml on the `samples` of the last complete feature run "
        "(or --samples-version) with the item vectors it was built from, under the config's evaluation protocol "
        "(`evaluation:`; one model per fold, early-stopping on the fold's validation AUC); evaluate "
        "on the pooled test rows, overall and on cold-start and rare items, next to the item-mean "
        "baseline on the same rows; log params, lineage, per-epoch metrics, plots and the last "
        "fold's model to MLflow and register it. Browse with `make ui`.",
    )
    train.add_argument("--model", default="dmf", help="a spec in conf/train/ or a path (default: %(default)s)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--samples-version", type=int, help="train on this version of samples (default: the last complete feature run's)"
    )
    compare = commands.add_parser(
        "compare",
        parents=[common],
        help="train every model with several seeds and tabulate the results",
        description="Fit the baselines (popularity, item mean, logistic regression on ids, LightGBM on the "
        "features) and train each spec of conf/train/ (or --model, repeatable) once per seed, as "
        "child runs of one MLflow parent run, under the config's evaluation protocol. Prints and "
        "writes to reports/compare/ (JSON, markdown, PNG) and to the parent run: AUC, GAUC and "
        "logloss with user-bootstrap 95%% intervals, overall and on cold-start and rare items, and "
        "each model's paired difference from --reference. With --item-vectors frozen --item-vectors aligned, "
        "each model that reads item vectors (and LightGBM) is trained on the samples built on each, and the "
        "table adds each one's paired aligned-minus-frozen difference.",
    )
    compare.add_argument("--model", dest="models", action="append", help="a spec to include (default: all)")
    compare.add_argument(
        "--baseline",
        dest="baselines",
        action="append",
        help="a baseline to include (default: all of popularity, item_mean, logistic_ids, lightgbm)",
    )
    compare.add_argument("--reference", default="dmf", help="the model others are compared with (default: %(default)s)")
    compare.add_argument(
        "--seeds",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        help="comma-separated seeds (default: each spec's training.seeds)",
    )
    compare.add_argument("--samples-version", type=int)
    compare.add_argument(
        "--item-vectors",
        action="append",
        choices=("frozen", "aligned"),
        help="compare on the newest full feature build on these item vectors (repeatable; the first is the base)",
    )
    tune = commands.add_parser(
        "tune",
        parents=[common],
        help="choose a model's settings on validation AUC (grid search, MLflow)",
        description="Train MODEL with every combination of the --grid values (one seed), as child runs of one "
        "MLflow parent run, under the config's evaluation protocol, and print the combination with "
        "the best mean validation AUC over the folds. Test metrics are logged but never used to "
        "choose. Put the winner into conf/train/MODEL.yaml.",
    )
    tune.add_argument("--model", default="dmf", help="a spec in conf/train/ or a path (default: %(default)s)")
    tune.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="a spec setting and its values, e.g. architecture.dropout=0.1,0.3 (repeatable)",
    )
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--samples-version", type=int)
    similar = commands.add_parser(
        "similar",
        parents=[common],
        help="the items nearest to an item (fused vectors, cosine)",
        description="Print the items most similar to ITEM_ID by their fused title+image vectors, from the index "
        "the embedding job built (or `dmf align`, for --version aligned). Needs no Spark.",
    )
    similar.add_argument(
        "--version",
        help="a fused encoder version, or `frozen` (the configured encoders') or `aligned` (the latest `dmf align`'s); "
        "default: the index the last `dmf embed` built",
    )
    similar.add_argument("item_id", type=int, metavar="ITEM_ID")
    similar.add_argument("-k", type=int, default=10, help="how many neighbours (default: %(default)s)")

    recommend = commands.add_parser(
        "recommend",
        parents=[common],
        help="a user's top items from a registered DMF model (no Spark)",
        description="Score every catalog item the user has not interacted with for USER_ID with a registered "
        "model (MLflow registry), as a serving endpoint would: the user's history from "
        "user_sequences, the items' vectors of the versions the model was trained with, the "
        "decoupled scorer (or the early-fusion one for dmf_early_fusion). Prints the top K with "
        "titles and click probabilities.",
    )
    recommend.add_argument("user_id", type=int, metavar="USER_ID")
    recommend.add_argument("-k", type=int, default=10, help="how many items (default: %(default)s)")
    recommend.add_argument("--model", default="dmf", help="registered model name (default: %(default)s)")
    recommend.add_argument(
        "--version",
        default=None,
        help="a version number or @ALIAS (default: the promotion alias, e.g. @champion, if set, else the latest version)",
    )

    promote = commands.add_parser(
        "promote",
        parents=[common],
        help="make a registered model the champion if it beats the current one (the promotion gate)",
        description="Score a registered version of the promotion model (promotion.model, default: its newest version), "
        "the current champion (alias promotion.alias) and the item-mean baseline on the same rows: those newer "
        "than anything either model trained on. Point the alias at the candidate only if its AUC beats both "
        "(by more than promotion.min_auc_gain over the champion). The decision and its reason go onto the "
        "candidate's MLflow run and model version. The training DAG runs the same gate.",
    )
    promote.add_argument("--version", help="the candidate's registered version (default: the newest)")
    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="check that this machine can run the pipeline: Java, Spark, lake, encoders, MLflow, Airflow",
        description="Check the set-up the config describes, one line per check (OK, PROBLEM or SKIPPED) and for each "
        "problem what is wrong and how to fix it: Java 17 or 21; Spark (a local session runs a job on Python workers, "
        "a standalone master accepts connections; YARN and Kubernetes are skipped); the lake (each table's version "
        "and rows); the text and image encoders load offline and embed an item; the MLflow store answers (the "
        "experiment, the promotion model and its champion); Airflow parses the DAG folder (skipped when not "
        "installed). Each check has a deadline. Exits 1 when any check finds a problem.",
    )

    airflow = commands.add_parser(
        "airflow",
        help="run the DAGs in dags/ locally with Airflow 3",
        description="Airflow 3 for this project: its home is airflow-home/ in the project (or --home); the DAG folder "
        "is dags/; the Spark connection (spark_default) submits to the config's spark.master.",
    )
    airflow_commands = airflow.add_subparsers(dest="airflow_command", required=True, metavar="ACTION")
    airflow_start = airflow_commands.add_parser(
        "start",
        parents=[common],
        help="start the API server (UI), scheduler, DAG processor and triggerer on 127.0.0.1 until Ctrl-C",
    )
    airflow_env = airflow_commands.add_parser(
        "env",
        parents=[common],
        help='print the environment as export lines, for `eval "$(dmf airflow env)"` before airflow commands',
    )
    for action, func in ((airflow_start, _airflow_start), (airflow_env, _airflow_env)):
        action.add_argument("--home", default=str(DEFAULT_AIRFLOW_HOME), help="AIRFLOW_HOME (default: %(default)s)")
        action.add_argument("--port", type=int, default=8080, help="the API server's port (default: %(default)s)")
        action.set_defaults(func=func)

    lake = commands.add_parser(
        "lake", help="inspect and maintain the Delta tables", description="Inspect and maintain the lake's Delta tables."
    )
    lake_commands = lake.add_subparsers(dest="lake_command", required=True, metavar="ACTION")
    lake_commands.add_parser("list", parents=[common], help="tables with their version, files and rows").set_defaults(
        func=_lake_list
    )
    history = lake_commands.add_parser("history", parents=[common], help="the commits of a table, newest first")
    history.add_argument("table")
    history.add_argument("--limit", type=int, default=20)
    history.set_defaults(func=_lake_history)
    optimize = lake_commands.add_parser("optimize", parents=[common], help="compact small files (same rows, new version)")
    optimize.add_argument("table")
    optimize.set_defaults(func=_lake_optimize)
    vacuum = lake_commands.add_parser(
        "vacuum", parents=[common], help="delete files no recent version uses (and orphans of killed jobs)"
    )
    vacuum.add_argument("table")
    vacuum.add_argument(
        "--retention-hours",
        type=int,
        default=168,
        help="keep files any version of the last H hours needs (default: %(default)s, "
        "so time travel within a week keeps working)",
    )
    vacuum.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    vacuum.set_defaults(func=_lake_vacuum)
    for command, func in (
        (run, _run),
        (ingest, _ingest),
        (validate, _validate),
        (embed, _embed),
        (align, _align),
        (features, _features),
        (train, _train),
        (compare, _compare),
        (tune, _tune),
        (similar, _similar),
        (recommend, _recommend),
        (promote, _promote),
        (doctor, _doctor),
    ):
        command.set_defaults(func=func)
    return parser


class _Progress:
    """Progress lines with the time since the command started."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:7.1f}s] {message}", flush=True)


Command = Callable[[argparse.Namespace, Config, _Progress], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "great_expectations", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Models load from local folders only (no hub access here or on air-gapped clusters), quietly.
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(key, value)
    name = " ".join(filter(None, (args.command, getattr(args, "lake_command", None), getattr(args, "airflow_command", None))))
    try:
        cfg = load_config(args.config, args.overrides)
        command: Command = args.func
        return command(args, cfg, _Progress())
    except ConfigError as e:  # a setting to fix, as argparse's own usage errors (exit 2)
        print(f"dmf {name}: configuration error: {e}", file=sys.stderr)
        return 2
    except (PipelineError, LookupError, ValueError) as e:  # bad input or missing data: the message says what to do
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"dmf {name}: {message}", file=sys.stderr)
        return 1


def _with_strict(args: argparse.Namespace, cfg: Config) -> Config:
    if args.strict:
        return cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"strict": True})})
    return cfg


def _ingest(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    preload(MLFLOW)  # for the accounting, while Spark starts
    from dmf_features.infra.dates import DateScope
    from dmf_features.infra.lake import Lake
    from dmf_features.infra.spark import get_spark
    from dmf_features.ingest import ingest

    progress(f"starting Spark ({cfg.spark.master})")
    spark = get_spark(cfg.spark)
    lake = Lake(cfg.lake)
    report = ingest(spark, _with_strict(args, cfg), lake, DateScope(args.date, args.since), progress)
    print(report.render(), flush=True)
    return _account(cfg, lake, report.account, progress)


def _account(cfg: Config, lake, account, progress: _Progress) -> int:
    """Print where the stage's rows went and log it to MLflow with the versions of the last complete runs."""
    from dmf_features.infra.accounting import log_account, pipeline_experiment
    from dmf_features.infra.runs import readable_versions

    print(account.render(), flush=True)
    log_account(cfg.mlflow, account, readable_versions(lake.root, lake.storage_options))
    progress(f"accounting logged to MLflow (experiment {pipeline_experiment(cfg.mlflow)!r})")
    return 0 if account.balanced else 1


def _validate(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    preload(GREAT_EXPECTATIONS)  # while Spark starts: the gates import it only after the session is up
    from dmf_features.infra.lake import Lake
    from dmf_features.infra.spark import get_spark

    tables = getattr(args, "tables", None) or cfg.quality.tables
    progress(f"validating {', '.join(tables)}")
    spark = get_spark(cfg.spark)
    from dmf_features.quality import validate_tables

    report = validate_tables(spark, Lake(cfg.lake), tables, cfg.ingest, cfg.quality.results_dir)
    print(report.summary(), flush=True)
    return 0 if report.success else 1


def _embed(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    preload(MLFLOW)  # for the accounting, while Spark starts
    from dmf_features.embedding import embed_items
    from dmf_features.infra.lake import Lake
    from dmf_features.infra.spark import get_spark

    spark = get_spark(cfg.spark)
    lake = Lake(cfg.lake)
    report = embed_items(spark, cfg, lake, progress)
    print(report.render(), flush=True)
    return _account(cfg, lake, report.account, progress)


def _align(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from dmf_features.alignment import align_embeddings
    from dmf_features.infra.lake import Lake
    from dmf_features.infra.spark import get_spark

    report = align_embeddings(get_spark(cfg.spark), cfg, Lake(cfg.lake), progress)
    print(report.render(), flush=True)
    return 0


def _features(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    preload(MLFLOW)  # for the accounting, while Spark starts
    from dmf_features.features import build_features
    from dmf_features.infra.dates import DateScope
    from dmf_features.infra.lake import Lake
    from dmf_features.infra.spark import get_spark

    spark = get_spark(cfg.spark)
    lake = Lake(cfg.lake)
    report = build_features(spark, cfg, lake, DateScope(args.date, args.since), progress)
    print(report.render(), flush=True)
    return _account(cfg, lake, report.account, progress)


def _training_setup(args: argparse.Namespace, cfg: Config, progress: Callable[[str], None]):
    from models.experiment import open_training

    return open_training(cfg, getattr(args, "samples_version", None), progress)


def _train(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from models.config import load_model_spec
    from models.experiment import train_run

    spec = load_model_spec(getattr(args, "model", "dmf"))
    evaluation, tracker = _training_setup(args, cfg, progress)
    result = train_run(spec, getattr(args, "seed", 0), evaluation, tracker, progress)
    m = result.metrics
    print(
        f"pooled test rows of {len(evaluation.folds)} fold(s): {int(m['test_samples']):,} "
        f"({int(m['test_cold_samples']):,} of cold-start items)"
    )
    for name, prefix in ((spec.name, "test"), ("item mean (baseline)", "item_mean_test")):
        print(
            f"  {name:<22} AUC {m[f'{prefix}_auc']:.4f}  GAUC {m[f'{prefix}_gauc']:.4f}  "
            f"logloss {m[f'{prefix}_logloss']:.4f}  cold-start AUC {m[f'{prefix}_cold_auc']:.4f}"
        )
    print(
        f"MLflow run {result.run_id} (experiment {cfg.mlflow.experiment!r}); open the UI with `make ui` "
        f"(mlflow ui --backend-store-uri {cfg.mlflow.tracking_uri}) and browse http://127.0.0.1:5000",
        flush=True,
    )
    return 0


def _compare(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from pathlib import Path

    from models.baselines import BASELINES
    from models.config import all_model_specs, load_model_spec
    from models.experiment import compare, markdown

    specs = [load_model_spec(m) for m in args.models] if args.models else all_model_specs()
    unknown = sorted(set(args.baselines or ()) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown} (known: {', '.join(BASELINES)})")
    from models.experiment import open_training

    labels = list(dict.fromkeys(args.item_vectors or ()))
    if labels and args.samples_version is not None:
        raise ValueError("--item-vectors finds the samples versions itself: leave out --samples-version")
    evaluation, tracker = open_training(cfg, args.samples_version, progress, labels[0] if labels else None)
    variants = {label: open_training(cfg, None, progress, label)[0] for label in labels[1:]}
    result = compare(
        specs,
        args.baselines or list(BASELINES),
        evaluation,
        tracker,
        Path(cfg.root) / "reports" / "compare",
        args.seeds,
        args.reference,
        progress,
        variants,
    )
    print(markdown(result), flush=True)
    return 0


def _tune(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    import yaml

    from models.config import load_model_spec
    from models.experiment import tune

    spec = load_model_spec(args.model)
    grid = {}
    for item in args.grid:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid {item!r}: write KEY=V1,V2 (e.g. architecture.dropout=0.1,0.3)")
        grid[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    evaluation, tracker = _training_setup(args, cfg, progress)
    _, trials = tune(spec, grid, evaluation, tracker, args.seed, progress)
    for trial in trials:
        print("  " + ", ".join(f"{k}={trial[k]}" for k in grid) + f": mean validation AUC {trial['valid_auc_mean']:.4f}")
    print("best on validation: " + ", ".join(f"{k}={trials[0][k]}" for k in grid))
    return 0


def _similar(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from dmf_features.embedding.item_index import ItemIndex
    from dmf_features.infra.lake import Lake

    lake = Lake(cfg.lake)
    index = ItemIndex.load(lake, _fused_version(args.version, cfg, lake) if args.version else None)
    neighbours = index.similar(args.item_id, args.k)
    print(f"items most similar to {args.item_id} {index.titles[args.item_id]!r} ({index.meta['version']}):")
    for rank, n in enumerate(neighbours, 1):
        print(f"  {rank:>2}. {n.similarity:6.3f}  {n.item_id:>8}  {n.title}")
    return 0


def _fused_version(name: str, cfg: Config, lake) -> str:
    """`frozen`, `aligned` or a literal fused encoder version."""
    from dmf_features.embedding.versions import item_vector_versions
    from dmf_features.schemas import FUSED

    return item_vector_versions(cfg, lake.root, name)[FUSED] if name in ("frozen", "aligned") else name


def _recommend(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    import mlflow

    from dmf_features.embedding.item_index import ItemIndex
    from dmf_features.infra.lake import Lake
    from models.recommend import recommend

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    version = args.version or _default_version(args.model, cfg.promotion.alias)
    model_uri = f"models:/{args.model}{version if version.startswith('@') else '/' + version}"
    best = recommend(model_uri, cfg.lake.uri.rstrip("/"), args.user_id, args.k, dict(cfg.lake.storage_options) or None)
    try:
        titles = ItemIndex.load(Lake(cfg.lake)).titles
    except LookupError:  # no index yet: ids without titles
        titles = {}
    print(f"top {len(best)} items for user {args.user_id} by {model_uri}:")
    for rank, item in enumerate(best, 1):
        print(f"  {rank:>2}. {item.probability:6.3f}  {item.item_id:>8}  {titles.get(item.item_id) or ''}")
    return 0


def _default_version(model: str, alias: str) -> str:
    """`@alias` when the registered model has it (the promotion gate set it), else the latest version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().get_model_version_by_alias(model, alias)
        return f"@{alias}"
    except MlflowException:
        return "latest"


def _promote(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from models.promotion import evaluate_candidate, promote

    decision = evaluate_candidate(cfg, args.version)
    print(decision.render(), flush=True)
    if decision.promote:
        promote(cfg, decision)
    return 0


def _doctor(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from dmf_features.doctor import diagnose, exit_code

    progress(f"dmf doctor: checking the set-up of {cfg.source_file}")
    return exit_code(diagnose(cfg))


def _airflow_environment(args: argparse.Namespace, cfg: Config) -> dict[str, str]:
    from dmf_features.orchestration.environment import airflow_environment

    return airflow_environment(cfg, Path(args.home).resolve(), args.port)


def _airflow_start(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from dmf_features.orchestration.services import serve

    return serve(_airflow_environment(args, cfg))


def _airflow_env(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from dmf_features.orchestration.environment import shell_exports

    print(shell_exports(_airflow_environment(args, cfg)))
    return 0


def _run(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    stages = (_ingest, _validate, _embed, *((_align,) if cfg.alignment.enabled else ()), _features, _train)
    for stage in stages:
        code = stage(args, cfg, progress)
        if code:
            print(f"dmf run: stopped at {stage.__name__.strip('_')} (exit {code})", file=sys.stderr)
            return code
    progress("pipeline finished")
    return 0


def _lake_list(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from dmf_features.infra.lake import Lake

    lake = Lake(cfg.lake)
    print(f"{'table':<22}{'version':>8}{'files':>8}{'rows':>12}   ({lake.root})")
    for name in lake.tables():
        table = lake.delta(name)
        print(f"{name:<22}{table.version():>8}{len(table.file_uris()):>8}{lake.row_count(name):>12,}")
    return 0


def _lake_history(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from dmf_features.infra.lake import Lake

    for h in Lake(cfg.lake).history(args.table, args.limit):
        when = dt.datetime.fromtimestamp(h["timestamp"] / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows = h.get("dmf.rows", (h.get("operationMetrics") or {}).get("num_added_rows", ""))
        print(f"v{h['version']:<5} {when}  {h['operation']:<12} {h.get('dmf.operation', ''):<20} rows={rows}")
    return 0


def _lake_optimize(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from dmf_features.infra.lake import Lake

    metrics = Lake(cfg.lake).optimize(args.table)
    print(f"{args.table}: {metrics['numFilesRemoved']} files compacted into {metrics['numFilesAdded']}")
    return 0


def _lake_vacuum(args: argparse.Namespace, cfg: Config, progress: _Progress) -> int:
    from dmf_features.infra.lake import Lake

    removed = Lake(cfg.lake).vacuum(args.table, args.retention_hours, args.dry_run)
    print(f"{args.table}: {'would delete' if args.dry_run else 'deleted'} {len(removed)} files")
    for path in removed[:20]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
