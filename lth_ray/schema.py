"""Names shared by the tracking writer (sweep/trainable) and the report reader, and where the
tracking store is when nobody says.

One MLflow experiment per ablation; one parent run per sweep; one nested child run per trial.
Child metrics are logged with step = pruning round (0 = dense). Accuracies are fractions in [0, 1],
`sparsity` is the fraction of prunable weights that are zero, `weights_remaining` is a percentage.
"""

# Tags on every run of lth_ray.
TAG_ROLE = "lth_ray.role"  # "sweep" on the parent, "trial" on children
TAG_SWEEP = "lth_ray.sweep"  # sweep id, on parent and children
TAG_ABLATION = "lth_ray.ablation"  # ablation name
TAG_TRIAL = "lth_ray.trial"  # trial key, e.g. "stability-s0-p0.1-rw1ep-reinit"
TAG_ROUNDS_TOTAL = "lth_ray.rounds_total"  # rounds a complete trial logs (prune.rounds + 1)
TAG_NUM_CLASSES = "lth_ray.num_classes"  # for the chance level
TAG_ROUNDS_DONE = "lth_ray.rounds_done"  # rounds finished so far (updated after every round)
TAG_DEVICE = "lth_ray.device"  # where the trial trained (cpu, cuda)
TAG_PRECISION = "lth_ray.precision"  # the precision that ran (train.precision 'auto' resolved)
TAG_AXES = (
    "lth_ray.axes"  # comma-separated dotted fields that vary in the sweep (each is a tag too)
)
TAG_ARM = "lth_ray.arm"  # ticket | one_shot | reinit | random_mask (#k for a repeated control)
TAG_CONTROL_INDEX = "control_index"  # which of a ticket's repeated controls (0 when not repeated)
TAG_STEPS_UNIT = (
    "lth_ray.steps_unit"  # "it" when the trial counts training or evaluation in iterations
)
TAG_ROUND0_UNIT = "lth_ray.round0_unit"  # the shared trunk unit round 0 was computed by
TAG_MASKS_FROM = "lth_ray.masks_from"  # a control's ticket, whose per-level masks it trained from
TAG_LEVEL1_FROM = "lth_ray.level1_from"  # a one-shot baseline: the ticket whose level 1 it reused
TAG_COMMAND = "lth_ray.command"  # on the parent run: the sweep's command line
TAG_PLAN = "lth_ray.plan"  # on the parent run: the plan's size (units by kind, planned epochs)
MLFLOW_PARENT = "mlflow.parentRunId"

# Tags naming the trial's place in the grid (plain names so the MLflow UI can filter by them).
TAG_CRITERION = "criterion"
TAG_SEED = "seed"
TAG_PRUNE_RATE = "prune_rate"
TAG_SCHEDULE = "schedule"
TAG_CONTROL = "control"  # none | reinit | random_mask
GRID_TAGS = (TAG_CRITERION, TAG_SEED, TAG_PRUNE_RATE, TAG_SCHEDULE, TAG_CONTROL)
# The trial fields those tags hold: each is the report's column of that name; every other varying
# field is tagged, and becomes a column, by its dotted path (`prune.rewind`).
FIELD_TAGS = {
    "prune.criterion": TAG_CRITERION,
    "seed": TAG_SEED,
    "prune.fraction": TAG_PRUNE_RATE,
    "prune.schedule": TAG_SCHEDULE,
    "prune.control": TAG_CONTROL,
}
# The ablation's older grid keys, each the axis of one field.
GRID_KEY_ALIASES = {"criteria": "prune.criterion", "seeds": "seed", "prune_rates": "prune.fraction"}

ROLE_SWEEP = "sweep"
ROLE_TRIAL = "trial"

# Per-round metrics (step = round).
ROUND_METRICS = (
    "sparsity",  # fraction of prunable weights that are zero
    "weights_remaining",  # percent of prunable weights left
    "sparsity_all",  # fraction of all parameters (biases and excluded layers included) masked off
    "zeros_all",  # fraction of all parameters exactly zero in the reported (early-stop) weights:
    # the study's "percentage of weights that are exactly zero", masked or not
    "test_acc",  # test accuracy of the best-validation (early-stop) weights
    "test_loss",
    "test_acc_final",  # test accuracy of the last epoch's weights
    "test_loss_final",
    "val_loss_best",  # minimum validation loss of the round
    "val_acc_best",  # validation accuracy at that epoch
    "best_epoch",  # 1-based epoch of minimum validation loss (early-stop epoch)
    "best_iteration",  # optimizer steps at that evaluation (early-stop iteration)
    "epochs",  # epochs the round trained (the last one may be partial)
    "iterations",  # optimizer steps the round trained (its budget in iterations)
    "evaluations",  # validation evaluations of the round (its points of the learning curve)
    "skipped",  # 1 when the criterion pruned nothing this round (stability: best == final)
    "pruned",  # prunable weights this round removed from the previous level (either schedule)
    "train_seconds",
    "images_per_s",
    "compression_ratio",  # all parameters / parameters not masked off
    "flops_reduction",  # dense FLOPs / FLOPs of the non-zero weights
)
# Learning curves, one value per evaluation (once per epoch by default, every train.eval_every):
# step = evaluation counted across the whole trial (round 0's first); `epoch_iteration` is the
# optimizer steps the round had done at that evaluation (the learning curves' x).
EPOCH_METRICS = ("epoch_train_loss", "epoch_val_loss", "epoch_val_acc", "epoch_iteration")
# Whole-trial metrics (no step): energy where NVML can read the GPU's power.
ENERGY_METRIC = "energy_wh"
# Per round (step = round), written after the round's checkpoint and report: the seconds spent on
# MLflow writes, the checkpoint and Tune's report, i.e. what Ray and MLflow cost each round.
BOOKKEEPING_METRIC = "bookkeeping_seconds"


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default store


def resolve_tracking_uri(uri: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else MLflow's default `sqlite:///mlflow.db` here.

    A relative sqlite path or a plain folder (MLflow's file store) is made absolute: Ray runs
    trials in other working folders, and the report must open the store the sweep wrote.
    """
    import os
    from pathlib import Path

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    elif "://" not in uri:
        uri = str(Path(uri).resolve())
    return uri


# An instability pair's child run (role "instability"): where it branched from, and what it found.
ROLE_INSTABILITY = "instability"
TAG_LMC_K = "lth_ray.instability.k"  # the rewind point k the copies branched from ('500it')
TAG_LMC_LEVEL = "lth_ray.instability.level"  # 0 = dense, r = the ticket's level-r mask
TAG_LMC_PAIR = "lth_ray.instability.pair"  # which noise pair of (seed, k, level)
TAG_LMC_TICKET = "lth_ray.instability.ticket"  # the ticket whose mask it used (level > 0)
TAG_LMC_BATCHNORM = "lth_ray.instability.batchnorm"  # recompute | interpolate | none (no BN)
LMC_METRICS = ("instability_test", "instability_train")  # max along the path - mean of the ends
LMC_PATH = "error_path_{split}"  # the error at each alpha (step = alpha index)
