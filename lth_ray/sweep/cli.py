"""`python -m lth_ray.sweep ABLATION.yaml`: the whole ablation on Ray Tune, recorded in MLflow.

The ablation is validated and expanded before Ray starts; the driver prepares MLflow (store,
experiment, parent run) so trials only write their own child runs; Tune runs one trial per grid
point with per-round checkpoints (a killed trial resumes at its next round); `--resume` restores an
interrupted sweep and runs only what is unfinished; at the end the report is written and attached.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault(
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"
)  # no per-trial CSV/TensorBoard files
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# MLflow's usage telemetry: nothing to send from a sweep (and its client thread raced in trials)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from lth_ray import schema  # noqa: E402
from lth_ray.config.errors import ConfigError  # noqa: E402
from lth_ray.config.grid import arm_of, expand_trials, trial_key, varying_fields  # noqa: E402
from lth_ray.config.load import cli_overrides, load_ablation, plugins_of  # noqa: E402
from lth_ray.config.sweep_checks import sweep_notes  # noqa: E402
from lth_ray.names import redact_argv, redact_uri, slug_problem  # noqa: E402
from lth_ray.report.provenance import sweep_tags  # noqa: E402
from lth_ray.specs import AblationSpec, DatasetSpec, TrialConfig  # noqa: E402
from lth_ray.sweep import local_ray  # noqa: E402
from lth_ray.sweep.mps import HINT as MPS_HINT  # noqa: E402
from lth_ray.sweep.mps import MpsError, mps_active, mps_daemon  # noqa: E402
from lth_ray.sweep.plan import Plan, SweepSettings  # noqa: E402
from lth_ray.sweep.progress import PART_MARK  # noqa: E402
from lth_ray.sweep.searcher import PlanSearcher  # noqa: E402
from lth_ray.sweep.store import SweepStore, experiment_root  # noqa: E402
from lth_ray.sweep.tracking import (  # noqa: E402
    SweepContext,
    find_sweep,
    new_sweep_id,
    prepare_sweep,
    rounds_done,
    set_sweep_status,
    set_sweep_tags,
)

log = logging.getLogger("lth_ray.sweep")
EXIT_OK, EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 2, 1, 130
FORWARDED_ENV = ("LTH_RAY_FAULT", "LTH_RAY_FAULT_MARKER", "MLFLOW_DISABLE_TELEMETRY")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m lth_ray.sweep", description=__doc__.splitlines()[0]
    )
    ap.add_argument("ablation", help="ablation YAML file (see ablations/)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. prune.rounds=5",
    )
    ap.add_argument(
        "--data-root", help="folder (or archive) holding the dataset; sets dataset.root"
    )
    ap.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    ap.add_argument(
        "--storage",
        default="ray_results",
        help="Tune results/checkpoints: a folder or s3://bucket/path",
    )
    ap.add_argument(
        "--address",
        help="Ray cluster to join ('auto' or host:port; default RAY_ADDRESS or a local Ray)",
    )
    ap.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    ap.add_argument(
        "--listen-all",
        action="store_true",
        help="local Ray: accept connections on every interface, not only 127.0.0.1 (anyone who can"
        " reach this machine can then run code in the sweep: trusted networks only)",
    )
    ap.add_argument(
        "--max-concurrent",
        type=int,
        help="cap on trials running at once (overrides tune.max_concurrent)",
    )
    ap.add_argument(
        "--max-trials",
        type=int,
        help="refuse sweeps of more trials than this (default 10000; sets tune.max_trials)",
    )
    ap.add_argument(
        "--resume", action="store_true", help="restore the newest (or --sweep-id) interrupted sweep"
    )
    ap.add_argument("--sweep-id", help="with --resume: which sweep; otherwise: name the new sweep")
    ap.add_argument(
        "--dry-run", action="store_true", help="print the plan's size and the trials, and exit"
    )
    ap.add_argument(
        "--no-share",
        action="store_true",
        help="every trial computes everything itself (its own dense round 0, a control its ticket's"
        " trajectory) instead of sharing that work: the same numbers, more epochs",
    )
    ap.add_argument("--no-report", action="store_true", help="skip the report at the end")
    ap.add_argument(
        "--mps",
        action="store_true",
        help="local Ray on a GPU machine: run a CUDA MPS daemon for the sweep, so that packed trials "
        "(resources.gpu < 1) share the GPU side by side instead of time-slicing it",
    )
    ap.add_argument(
        "--pending-timeout",
        type=float,
        help="seconds trials may wait for resources the cluster lacks (default 300 locally, 1800 on a "
        "cluster, where the autoscaler may still be starting GPU nodes)",
    )
    return ap.parse_args(argv)


def load_spec(args: argparse.Namespace) -> AblationSpec:
    return load_ablation(
        args.ablation,
        cli_overrides(args.set, args.data_root, args.max_concurrent, args.max_trials),
    )


def trial_table(trials: list[TrialConfig]) -> str:
    """The dry-run table: the trial keys and only the fields that vary between trials."""
    varying = varying_fields(trials)
    cells = {"arm": arm_of}
    rows = [["#", "trial", *varying]] + [
        [str(i), t.key, *(cells[k](t) if k in cells else t.axes.get(k, "") for k in varying)]
        for i, t in enumerate(trials)
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def sweep_size(spec: AblationSpec, trials: list[TrialConfig]) -> str:
    """'criteria_conv4: 120 trials (40 ticket, 40 one_shot, 40 reinit), 1920 rounds; varying: ...'"""
    arms: dict[str, int] = {}
    for t in trials:
        arm = arm_of(t).split("#")[0]
        arms[arm] = arms.get(arm, 0) + 1
    parts = ", ".join(f"{n} {a}" for a, n in arms.items())
    rounds = sum(t.prune.rounds + 1 for t in trials)
    varying = ", ".join(f for f in varying_fields(trials) if f != "arm") or "nothing"
    return f"{spec.name}: {len(trials)} trials ({parts}), {rounds} rounds; varying: {varying}"


def absolutize(trial: TrialConfig) -> TrialConfig:
    """Trials run in Ray workers with other working folders: make data paths absolute."""
    t = dataclasses.replace(trial, dataset=dataclasses.replace(trial.dataset))
    t.dataset.root = str(Path(t.dataset.root).expanduser().resolve())
    if t.dataset.cache_dir:
        t.dataset.cache_dir = str(Path(t.dataset.cache_dir).expanduser().resolve())
    return t


def on_disk(d: DatasetSpec) -> bool:
    """The dataset's files are there already (reading it downloads nothing)."""
    from lth_ray.lottery.datasets import DATASETS

    sources = getattr(DATASETS.get(d.name), "sources", None) if d.name in DATASETS else None
    return sources is not None and sources(d) is not None


def check_data(trials: list[TrialConfig], file: str) -> dict[str, int]:
    """Decode (and cache) each distinct dataset once in the driver: missing files fail here, trials
    hit the cache, and what depends on the data's size (a rewind point in iterations against a
    round 0 in epochs) is checked for every trial before any starts. Returns the training sets'
    sizes (`plan.dataset_key` -> examples), which the plan needs for data of unfixed size."""
    from lth_ray.lottery.data import DatasetError, load_dataset
    from lth_ray.lottery.schedule import schedule_problem
    from lth_ray.sweep.plan import dataset_key

    sizes: dict[str, int] = {}
    for t in trials:
        key = dataset_key(t.dataset)
        if key not in sizes:
            try:
                sizes[key] = len(load_dataset(t.dataset).train_x)
            except DatasetError as e:  # missing, truncated or unreadable files
                raise ConfigError(file, "dataset.root", str(e)) from None
            except ValueError as e:  # a split that does not fit the data (dataset.val_size)
                raise ConfigError(file, "dataset.val_size", str(e)) from None
        problem = schedule_problem(t, sizes[key])
        if problem:
            raise ConfigError(file, problem[0], f"trial {t.key}: {problem[1]}")
    return sizes


def init_ray(args: argparse.Namespace) -> bool:
    """Join a cluster (--address / RAY_ADDRESS) or start a quiet local Ray on loopback. Returns True when local."""
    import ray

    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    kwargs: dict[str, Any] = {
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "runtime_env": {"env_vars": env} if env else None,
    }
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
        return False
    if os.environ.get("LTH_RAY_TMPDIR"):
        kwargs["_temp_dir"] = os.environ["LTH_RAY_TMPDIR"]
    if os.environ.get("LTH_RAY_NODE_IP"):
        kwargs["_node_ip_address"] = os.environ["LTH_RAY_NODE_IP"]
    local_ray.start(args.num_cpus, listen_all=args.listen_all, **kwargs)
    return True


def resolve_gpu(spec: AblationSpec, local: bool) -> tuple[float, str | None]:
    """GPUs per trial; CPU fallback (or a clear error) when no GPU is visible on a local Ray."""
    import ray

    gpu = spec.resources.gpu
    if 0 < gpu < 1 and local and ray.cluster_resources().get("GPU", 0) > 0 and not mps_active():
        return gpu, (
            f"note: {round(1 / gpu)} trials share each GPU (resources.gpu {gpu}) but CUDA MPS is not "
            f"running, so the GPU time-slices between them and packing adds no throughput: rerun with "
            f"--mps, or {MPS_HINT}"
        )
    if gpu <= 0 or ray.cluster_resources().get("GPU", 0) > 0 or not local:
        return gpu, None
    if spec.resources.gpu_fallback == "cpu":
        return 0.0, f"no GPU visible: running the trials on CPU (resources.gpu {gpu} ignored)"
    raise ConfigError(
        None,
        "resources.gpu",
        f"asks for {gpu} GPU per trial but this Ray has no GPU (gpu_fallback: error)",
    )


def unit_name(trial) -> str:
    """A Tune trial's name: the trial key, or the shared unit's id (with the part of a unit that
    streams behind another, after its first)."""
    part = trial.config.get("part", 0)
    return trial.config["unit"]["id"] + (f"{PART_MARK}{part}" if part else "")


def run_report(ctx: SweepContext) -> Path | None:
    """The sweep's report, attached to its parent run; its folder, or None when it failed."""
    from lth_ray.report import build_report

    try:
        report = build_report(ctx.tracking_uri, experiment=ctx.ablation, sweep=ctx.sweep_id)
    except Exception as e:  # the sweep's results are safe in MLflow either way
        print(
            f"report failed ({type(e).__name__}: {e}); rerun: python -m lth_ray.report --sweep {ctx.sweep_id}"
        )
        return None
    from mlflow import MlflowClient

    MlflowClient(ctx.tracking_uri).log_artifacts(ctx.parent_run_id, str(report.out_dir), "report")
    print(f"report: {report.out_dir}")
    return Path(report.out_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mps and (args.address or os.environ.get("RAY_ADDRESS")):
        print(
            "error: --mps starts MPS for a local Ray; on a cluster the GPU workers start it "
            "(cluster.yaml, worker_start_ray_commands)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        with mps_daemon(args.mps and not args.dry_run) as started:
            if started:
                print("CUDA MPS daemon started for this sweep (stopped at its end)")
            return run_sweep(args)
    except MpsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG


def run_sweep(args: argparse.Namespace) -> int:
    try:
        if args.sweep_id is not None and slug_problem(args.sweep_id):
            raise ConfigError(args.ablation, "--sweep-id", str(slug_problem(args.sweep_id)))
        spec = load_spec(args)
        trials = [absolutize(t) for t in expand_trials(spec)]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    from lth_ray.sweep.plan import build_plan

    def plan_of(sizes: dict[str, int]) -> Plan:
        return build_plan(
            trials,
            share=not args.no_share,
            instability=spec.analysis.instability,
            branch_from=spec.tune.branch_from,
            sizes=sizes,
        )

    for note in sweep_notes(spec, trials):
        print(note)
    if args.dry_run:
        fetched = [t for t in trials if t.dataset.download and not on_disk(t.dataset)]
        if fetched:
            print(
                f"note: --dry-run does not read {fetched[0].dataset.name} (dataset.download: true"
                " would fetch it); the sweep reads it before any trial starts"
            )
        try:  # every check that needs no training: the data on disk is read (and cached) too
            skipped = {t.key for t in fetched}
            sizes = check_data([t for t in trials if t.key not in skipped], args.ablation)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_CONFIG
        print(sweep_size(spec, trials))
        print(plan_of(sizes).summary())
        print(trial_table(trials))
        return EXIT_OK

    from lth_ray.lottery.data import DatasetError
    from lth_ray.sweep.preflight import check_machine, check_storage, check_tracking

    tracking_uri = schema.resolve_tracking_uri(args.tracking_uri)
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    try:
        check_machine(spec, trials, args.ablation, local, args.num_cpus)
        plan = plan_of(check_data(trials, args.ablation))
        check_storage(args.storage)
        check_tracking(tracking_uri)
    except (DatasetError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG

    if args.resume:
        ctx = find_sweep(tracking_uri, spec.name, args.sweep_id)
        if ctx is None:
            print(f"error: no sweep of '{spec.name}' to resume in {tracking_uri}", file=sys.stderr)
            return EXIT_CONFIG
    else:
        sweep_id = args.sweep_id or new_sweep_id()
        ctx = prepare_sweep(
            tracking_uri, spec.name, sweep_id, spec.description, spec.to_dict(), len(trials)
        )
        set_sweep_tags(
            ctx,
            {f"{schema.TAG_PLAN}.units.{k}": str(n) for k, n in plan.counts().items()}
            | {
                f"{schema.TAG_PLAN}.epochs": f"{plan.epochs:.0f}",
                f"{schema.TAG_PLAN}.epochs_without_sharing": f"{plan.unshared_epochs:.0f}",
                f"{schema.TAG_PLAN}.critical_path_epochs": f"{plan.critical_path:.0f}",
                f"{schema.TAG_PLAN}.critical_path_epochs_whole_tickets": (
                    f"{plan.critical_path_whole:.0f}"
                ),
                f"{schema.TAG_PLAN}.shared": str(plan.shared).lower(),
                f"{schema.TAG_PLAN}.branch_from": plan.branch_from,
                schema.TAG_COMMAND: " ".join(
                    ["python -m lth_ray.sweep", *redact_argv(sys.argv[1:])]
                )[:5000],
            }
            | sweep_tags(threads=max(1, int(spec.resources.cpu))),
        )
    print(
        f"sweep {ctx.sweep_id}: {len(trials)} trials of '{spec.name}', MLflow {redact_uri(tracking_uri)}"
        f" (run {ctx.parent_run_id})"
    )
    print(plan.summary())
    try:
        return run_tune(args, spec, trials, ctx, tracking_uri, plan)
    except BaseException as e:  # the parent run must not stay RUNNING after a crash or Ctrl-C
        if not isinstance(e, KeyboardInterrupt):
            set_sweep_status(ctx, "FAILED", **{"lth_ray.state": f"error: {type(e).__name__}"})
        raise


def run_tune(
    args: argparse.Namespace,
    spec: AblationSpec,
    trials: list[TrialConfig],
    ctx: SweepContext,
    tracking_uri: str,
    plan: Plan,
) -> int:
    """Ray and Tune: run (or resume) the trials, then set the sweep's status and write the report."""
    # Units arrive from a searcher; Tune's default for searchers keeps one trial pending at a time,
    # which starts short units one by one. Let every runnable unit queue for a slot.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(16, len(plan.units))))
    import ray

    from lth_ray.sweep.progress import NoResourcesError, TrialConfigError

    local = init_ray(args)
    try:
        gpu, note = resolve_gpu(spec, local)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        set_sweep_status(ctx, "FAILED", **{"lth_ray.state": "no_resources"})
        ray.shutdown()
        return EXIT_CONFIG
    if note:
        print(note)
    progress = sweep_progress(args, spec, trials, ctx, tracking_uri, gpu, local)
    made = make_tuner(args, spec, ctx, plan, gpu, progress)
    if made is None:
        ray.shutdown()
        return EXIT_CONFIG
    tuner, done_before = made
    t0 = time.monotonic()
    try:
        results = tuner.fit()
    except NoResourcesError as e:
        print(f"error: {e}", file=sys.stderr)
        set_sweep_status(ctx, "FAILED", **{"lth_ray.state": "no_resources"})
        ray.shutdown()
        return EXIT_INCOMPLETE
    except TrialConfigError as e:  # not a fault: retrying or resuming cannot help
        print(f"error: {args.ablation}: {e}", file=sys.stderr)
        set_sweep_status(ctx, "FAILED", **{"lth_ray.state": "config_error"})
        ray.shutdown()
        return EXIT_CONFIG
    except KeyboardInterrupt:
        results = None
    complete = done_before + complete_trials(results)
    print(f"{complete}/{len(trials)} trials complete in {time.monotonic() - t0:.1f} s")
    ray.shutdown()
    return finish(args, ctx, tracking_uri, len(trials) - complete, interrupted=results is None)


def sweep_progress(
    args: argparse.Namespace,
    spec: AblationSpec,
    trials: list[TrialConfig],
    ctx: SweepContext,
    tracking_uri: str,
    gpu: float,
    local: bool,
):
    """The console progress and its watchdogs (missing resources, a tracking server gone)."""
    import ray

    from lth_ray.sweep.preflight import tracking_server_up
    from lth_ray.sweep.progress import SweepProgress

    request = {"CPU": spec.resources.cpu, "GPU": gpu}
    return SweepProgress(
        n_trials=len(trials),
        rounds_per_trial={trial_key(t): t.prune.rounds + 1 for t in trials},
        pending_timeout_s=args.pending_timeout or (300.0 if local else 1800.0),
        has_resources=lambda: all(
            ray.cluster_resources().get(k, 0) >= v for k, v in request.items() if v > 0
        ),
        request=request,
        max_failures=spec.tune.max_failures,
        tracking_up=(
            (lambda: tracking_server_up(tracking_uri))
            if tracking_uri.startswith(("http://", "https://"))
            else None
        ),
        done_before=rounds_done(ctx) if args.resume else None,
    )


def make_tuner(
    args: argparse.Namespace,
    spec: AblationSpec,
    ctx: SweepContext,
    plan: Plan,
    gpu: float,
    progress,
):
    """A new Tuner fed by the plan's searcher, and the trials finished before it: none for a new
    sweep; for `--resume`, a new Tune experiment whose searcher continues from the state the sweep
    keeps in its storage (units done stay done, every other unit continues from its own saved
    state; Ray Tune's pickled experiment files are never read). None (with the error printed)
    when there is nothing to resume or the plan changed."""
    from ray import tune

    from lth_ray.sweep.searcher import PlanChangedError
    from lth_ray.sweep.trainable import lottery_trainable

    trainable = tune.with_resources(lottery_trainable, {"cpu": spec.resources.cpu, "gpu": gpu})
    store = SweepStore.of_sweep(args.storage, spec.name, ctx.sweep_id)
    settings = SweepSettings(
        ctx=ctx.to_dict(),
        threads=max(1, int(spec.resources.cpu)),
        root=store.root,
        shared=plan.shared,
        plugins=[p.to_dict() for p in plugins_of(spec, args.ablation)],
        level_wait_s=float(spec.tune.level_wait_s),
    )
    name, before = ctx.sweep_id, 0
    if args.resume:
        try:
            searcher = PlanSearcher.resumed(plan, settings, store.root)
        except PlanChangedError as e:
            print(f"error: {args.ablation}: {e}", file=sys.stderr)
            return None
        if searcher is None:
            print(
                f"error: no sweep state to resume at {store.root} (is --storage the same as"
                " before?)",
                file=sys.stderr,
            )
            return None
        before = searcher.trials_done()
        name = f"{ctx.sweep_id}.resumed-{time.strftime('%Y%m%d-%H%M%S')}"
        set_sweep_status(ctx, "RUNNING")
    else:
        searcher = PlanSearcher(plan, settings, store.root)
        searcher.save_state_now()  # so that a driver killed before any unit ends can --resume
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=plan.tune_samples,
            max_concurrent_trials=spec.tune.max_concurrent or None,
            reuse_actors=spec.tune.reuse_actors,
            trial_name_creator=unit_name,
            trial_dirname_creator=unit_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=experiment_root(args.storage, spec.name),
            failure_config=tune.FailureConfig(max_failures=spec.tune.max_failures),
            verbose=0,
            callbacks=[progress],
        ),
    )
    return tuner, before


def complete_trials(results) -> int:
    """Trials (not trunks) that finished every round without an error."""
    if results is None:
        return 0
    complete = 0
    for r in results:
        if (r.config or {}).get("unit", {}).get("kind") == "trunk":
            continue
        m = r.metrics or {}
        complete += int(r.error is None and m.get("rounds_done", -1) == m.get("rounds_total", -2))
    return complete


def finish(
    args: argparse.Namespace,
    ctx: SweepContext,
    tracking_uri: str,
    unfinished: int,
    interrupted: bool,
) -> int:
    """The sweep's final status, the resume hint where trials are unfinished, and the report."""
    if unfinished or interrupted:
        set_sweep_status(ctx, "KILLED", **{"lth_ray.state": "incomplete"})
        print(
            f"{unfinished} trials unfinished. Resume with:\n  python -m lth_ray.sweep {args.ablation} --resume "
            f"--sweep-id {ctx.sweep_id} --storage {args.storage}"
            + (f" --tracking-uri {tracking_uri}" if args.tracking_uri else ""),
            file=sys.stderr,
        )
        if not args.no_report:
            run_report(ctx)
        return EXIT_INTERRUPTED if interrupted else EXIT_INCOMPLETE
    set_sweep_status(ctx, "FINISHED", **{"lth_ray.state": "complete"})
    if not args.no_report:
        run_report(ctx)
    print(
        f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri}, then open "
        f"http://127.0.0.1:5000/#/experiments/{ctx.experiment_id}/runs?workflowType=machine_learning"
    )
    return EXIT_OK
