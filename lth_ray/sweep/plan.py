"""The sweep's plan: trials turned into units of work that compute each shared thing once.

- a trunk: the dense round 0 of every trial with the same seed, data, model and training (the prune
  settings do not touch round 0); it captures every rewind point its trials need;
- a trial unit per trial (ticket, one-shot, control): its rounds 1..R, starting from its trunk;
- a control trains from its ticket's per-level masks instead of recomputing the ticket's whole
  trajectory, and streams behind it: it depends on one level of the ticket (`level_deps`), so its
  level r trains as soon as the ticket's level r is published, one level behind the ticket rather
  than after all R of them (`branch_from="whole"` makes it wait for the ticket's last level
  instead: the same numbers, the longer critical path, kept to measure the difference);
`searcher.PlanSearcher` hands the units to Ray Tune as soon as what they need has finished, so the
trials still run packed, retried and resumable; no slot waits while runnable work exists: a unit
whose next level is not there yet ends its Tune trial (its state is saved after every level) and is
released again when it is. With sharing off
(`--no-share`), every trial is one self-contained unit, as a sweep of independent trials.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lth_ray.config.feasible import train_size
from lth_ray.config.grid import arm_kind, identity
from lth_ray.lottery import schedule
from lth_ray.specs import DatasetSpec, InstabilitySpec, TrialConfig

KINDS = ("trunk", "ticket", "one_shot", "control", "instability")


@dataclass(frozen=True)
class Unit:
    """One unit of work: what the plan schedules and what the trainable receives (through Ray
    Tune's config as `to_dict()`, plain JSON values)."""

    id: str  # the trial key, or "trunk-<hash>"
    kind: str  # trunk | ticket | one_shot | control | instability
    trial: dict[str, Any]  # the TrialConfig (a trunk: of its first trial), as to_dict()
    deps: tuple[str, ...] = ()  # units that must have finished first
    epochs: float = 0.0  # planned training epochs of this unit
    trunk: str | None = None  # a trial: the unit that trained its round 0
    masks_from: str | None = None  # a control: the ticket whose per-level masks it trains from
    publish_masks: bool = False  # a ticket: store each level's mask for its controls
    rewinds: tuple[tuple[int, str], ...] = ()  # a trunk: every rewind point its trials need
    shared_by: int = 0  # a trunk: how many trials start from it
    level_deps: tuple[tuple[str, int], ...] = ()  # (unit, level): levels that must exist first
    levels: int = 0  # a shared trial unit: the levels (rounds 1..R) its epochs are spread over
    level1_from: str | None = None  # a one-shot baseline: the ticket whose level 1 it is
    analysis: dict[str, Any] = dataclasses.field(default_factory=dict)  # an instability pair's k,
    # level, pair, and the analysis settings (specs.InstabilitySpec)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["deps"], d["rewinds"] = list(self.deps), [list(r) for r in self.rewinds]
        d["level_deps"] = [list(x) for x in self.level_deps]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        return cls(
            **{
                **d,
                "deps": tuple(d.get("deps", ())),
                "rewinds": tuple((int(n), str(u)) for n, u in d.get("rewinds", ())),
                "level_deps": tuple((str(u), int(n)) for u, n in d.get("level_deps", ())),
            }
        )


@dataclass(frozen=True)
class SweepSettings:
    """What every unit of a sweep shares: its MLflow context, threads per trial, its storage."""

    ctx: dict[str, Any]  # SweepContext.to_dict()
    threads: int
    root: str  # the sweep's storage folder or URI (SweepStore)
    shared: bool  # units hand on trunks and masks through the storage
    plugins: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # config.plugins.Plugin
    level_wait_s: float = 30.0  # a streaming unit waits this long for its next level, then yields


def tune_config(unit: Unit, settings: SweepSettings, part: int = 0) -> dict[str, Any]:
    """A unit as Ray Tune's trial config; `part` counts the Tune trials of a unit that streams
    behind another (each continues where the last one stopped to wait)."""
    return {"unit": unit.to_dict(), "sweep": dataclasses.asdict(settings), "part": part}


def from_tune_config(config: dict[str, Any]) -> tuple[Unit, SweepSettings]:
    return Unit.from_dict(config["unit"]), SweepSettings(**config["sweep"])


@dataclass
class Plan:
    units: list[Unit]
    shared: bool
    unshared_epochs: float  # what the same trials cost when each computes everything itself
    trials: int = 0
    images_per_epoch: int | None = None  # the training set's size, when every trial fixes the same
    branch_from: str = "level"  # "whole": controls start once their ticket's last level exists

    def images(self, epochs: float) -> float | None:
        return None if self.images_per_epoch is None else epochs * self.images_per_epoch

    @property
    def epochs(self) -> float:
        return sum(u.epochs for u in self.units)

    def level_finish(self, streaming: bool | None = None) -> dict[str, list[float]]:
        """Each unit's finish time (in epochs, with a slot for every unit) after its start and
        after each of its levels: [start-done, level 1, ..., level R]; a trunk: [round 0].
        `streaming=False`: as if a unit waited for the whole of every unit whose levels it needs
        (default: as the plan's `branch_from` says)."""
        if streaming is None:
            streaming = self.branch_from == "level"
        units = {u.id: u for u in self.units}
        done: dict[str, list[float]] = {}

        def at(src: str, level: int) -> float:
            times = finish(src)
            return times[min(level, len(times) - 1)] if streaming else times[-1]

        def finish(uid: str) -> list[float]:
            if uid in done:
                return done[uid]
            u = units[uid]
            start = max([finish(d)[-1] for d in u.deps], default=0.0)
            if not u.levels:  # waits for the levels it needs, then runs
                start = max([start, *(at(src, r) for src, r in u.level_deps)])
                done[uid] = [start + u.epochs]
                return done[uid]
            if u.level1_from:  # level 1 is the ticket's: no work of its own, then the rest
                times = [start, max(start, at(u.level1_from, 1))]
                per_level = u.epochs / max(u.levels - 1, 1)
                times += [times[-1] + per_level * r for r in range(1, u.levels)]
                done[uid] = times
                return times
            per_level = u.epochs / u.levels
            times = [start]
            for r in range(1, u.levels + 1):
                ready = [at(src, r) for src, _ in u.level_deps]
                times.append(max([times[-1], *ready]) + per_level)
            done[uid] = times
            return times

        for u in self.units:
            finish(u.id)
        return done

    def level_finish_max(self, streaming: bool | None = None) -> float:
        return max((t[-1] for t in self.level_finish(streaming).values()), default=0.0)

    @property
    def critical_path(self) -> float:
        """The sweep's shortest wall time in epochs with a slot for every unit: its longest chain
        of dependent work (a streaming control adds one level to its ticket, not R)."""
        return self.level_finish_max()

    @property
    def critical_path_whole(self) -> float:
        """The same with every unit waiting for the whole of the units whose levels it needs."""
        return self.level_finish_max(streaming=False)

    @property
    def tune_samples(self) -> int:
        """Tune trials the plan may need: a streaming unit may stop to wait before each level."""
        return sum(1 + (u.levels if u.masks_from and u.level_deps else 0) for u in self.units)

    def counts(self) -> dict[str, int]:
        c = Counter(u.kind for u in self.units)
        return {k: c[k] for k in KINDS if c[k]}

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts().items())
        mode = "shared" if self.shared else "not shared (--no-share)"
        images = self.images(self.epochs)
        seen = (
            ""
            if images is None
            else f"; planned images: {images:,.0f} (without sharing:"
            f" {self.images(self.unshared_epochs):,.0f})"
        )
        other = (
            f"waiting for whole tickets: {self.critical_path_whole:,.0f}"
            if self.branch_from == "level"
            else f"branching per level: {self.level_finish_max(True):,.0f}; tune.branch_from: whole"
        )
        return (
            f"planned epochs: {self.epochs:,.0f} (without sharing: {self.unshared_epochs:,.0f})"
            f"{seen}; critical path: {self.critical_path:,.0f} epochs ({other})"
            f"; units: {kinds}; work {mode}"
        )


Sizes = Mapping[str, int]  # dataset_key -> training examples, as the driver read them


def dataset_key(d: DatasetSpec) -> str:
    return repr(dataclasses.asdict(d))


def n_train(t: TrialConfig, sizes: Sizes | None = None) -> int | None:
    """Training examples of `t`: as read (`sizes`), else where the config fixes them, else None
    (an image folder before it is read)."""
    known = None if sizes is None else sizes.get(dataset_key(t.dataset))
    return known if known is not None else train_size(t.dataset)


def round_epochs(t: TrialConfig, sizes: Sizes | None = None) -> tuple[float, float]:
    """(round 0, each later round) in epochs, at the training set's size where it is known."""
    return schedule.round_epochs(t, n_train(t, sizes))


def trunk_key(t: TrialConfig) -> str:
    """Everything round 0 depends on: seed, data, model and training (not the later rounds)."""
    train = dataclasses.asdict(t.train)
    train.pop("retrain")
    ident = repr((t.seed, dataclasses.asdict(t.dataset), dataclasses.asdict(t.model), train))
    return "trunk-" + hashlib.sha256(ident.encode()).hexdigest()[:10]


def _ticket_of(t: TrialConfig) -> TrialConfig:
    ticket = copy.deepcopy(t)
    ticket.prune.control, ticket.prune.control_index = "none", 0  # type: ignore[assignment]
    return ticket


def _iterative_of(t: TrialConfig) -> TrialConfig:
    ticket = copy.deepcopy(t)
    ticket.prune.schedule = "iterative"  # type: ignore[assignment]
    return ticket


def pair_epochs(t: TrialConfig, level: int, k: str, sizes: Sizes | None = None) -> float:
    """An instability pair's planned epochs: two copies from step k to the end of their round."""
    n = n_train(t, sizes)
    total = schedule.parse_steps(t.train.initial if level == 0 else t.train.retrain)
    k_epochs = schedule.steps_epochs(t, schedule.parse_steps(k), n)
    return 2 * (schedule.steps_epochs(t, total, n) - k_epochs)


def instability_units(
    trials: list[TrialConfig], spec: InstabilitySpec, share: bool, sizes: Sizes | None = None
) -> tuple[list[Unit], float]:
    """Each noise pair of the analysis as a unit: the dense net (level 0) once per trunk, a level's
    mask once per ticket; a pair branches from its trunk's W_k and, past level 0, waits for that
    level of its ticket. Unshared, a pair computes W_k (and the ticket's levels) itself.
    Also what the pairs cost unshared."""
    settings = dataclasses.asdict(spec)
    settings.pop("at"), settings.pop("levels"), settings.pop("pairs")
    tickets = [t for t in trials if arm_kind(t) == "ticket"]
    sources: dict[
        str, TrialConfig
    ] = {}  # the dense net: one per trunk, a ticket's where it has one
    for t in [*tickets, *trials]:
        sources.setdefault(trunk_key(t), t)
    units, unshared = [], 0.0
    for level in spec.levels:
        for t in sources.values() if level == 0 else tickets:
            if level > t.prune.rounds:
                continue
            tid = trunk_key(t)
            for k in spec.at:
                for pair in range(spec.pairs):
                    name = tid.removeprefix("trunk-") if level == 0 else t.key
                    analysis = {"k": k, "level": level, "pair": pair, **settings}
                    if level:
                        analysis["ticket"] = t.key
                    first, later = round_epochs(t, sizes)
                    alone = pair_epochs(t, level, k, sizes) + first + level * later
                    epochs = pair_epochs(t, level, k, sizes) if share else alone
                    unshared += alone
                    units.append(
                        Unit(
                            f"lmc-{name}-k{k}-L{level}-p{pair}",
                            "instability",
                            t.to_dict(),
                            (tid,) if share else (),
                            epochs,
                            level_deps=((t.key, level),) if share and level else (),
                            trunk=tid if share else None,
                            analysis=analysis,
                        )
                    )
    return units, unshared


def build_plan(
    trials: list[TrialConfig],
    share: bool = True,
    instability: InstabilitySpec | None = None,
    branch_from: str = "level",
    sizes: Sizes | None = None,
) -> Plan:
    """The sweep's units; with an instability analysis (its `at` not empty), its pairs too; the
    images of an epoch where every trial trains on the same number. `branch_from="whole"`: a
    control waits for its ticket's last level rather than streaming one level behind it. `sizes`:
    the training sets' sizes as read, for data whose size the config does not fix."""
    if branch_from not in ("level", "whole"):
        raise ValueError(f"branch_from: expected 'level' or 'whole', got {branch_from!r}")
    analysis = instability if instability is not None and instability.at else None
    plan = _trial_plan(trials, share, [] if analysis is None else analysis.at, branch_from, sizes)
    if analysis is not None:
        pairs, unshared = instability_units(trials, analysis, share, sizes)
        plan.units += pairs
        plan.unshared_epochs += unshared
    # tickets whose levels a control or a pair branches from publish them to the storage
    publishers = {u.masks_from for u in plan.units if u.masks_from} | {
        src for u in plan.units for src, _ in u.level_deps
    }
    plan.units = [
        dataclasses.replace(u, publish_masks=u.id in publishers) if u.kind == "ticket" else u
        for u in plan.units
    ]
    counts = {n_train(t, sizes) for t in trials}
    return dataclasses.replace(
        plan, images_per_epoch=counts.pop() if len(counts) == 1 else None, branch_from=branch_from
    )


def _trial_plan(
    trials: list[TrialConfig],
    share: bool,
    extra_rewinds: list[str],
    branch_from: str = "level",
    sizes: Sizes | None = None,
) -> Plan:
    unshared = 0.0
    for t in trials:
        first, later = round_epochs(t, sizes)
        unshared += first + t.prune.rounds * later * (2 if t.prune.control != "none" else 1)
    if not share:
        units = []
        for t in trials:
            first, later = round_epochs(t, sizes)
            mult = 2 if t.prune.control != "none" else 1
            kind = arm_kind(t)
            epochs = first + t.prune.rounds * later * mult
            units.append(Unit(t.key, kind, t.to_dict(), (), epochs))
        return Plan(units, False, unshared, len(trials))
    keys = {identity(t): t.key for t in trials}
    trunks: dict[str, list[TrialConfig]] = {}
    for t in trials:
        trunks.setdefault(trunk_key(t), []).append(t)
    units: list[Unit] = []
    for tid, members in trunks.items():
        points = [m.prune.rewind for m in members] + list(extra_rewinds)
        rewinds = sorted({schedule.parse_rewind(p) for p in points} - {None})
        first = round_epochs(members[0], sizes)[0]
        units.append(
            Unit(
                tid,
                "trunk",
                members[0].to_dict(),
                epochs=first,
                rewinds=tuple(rewinds),  # type: ignore[arg-type]
                shared_by=len(members),
            )
        )
    for t in trials:
        tid = trunk_key(t)
        _, later = round_epochs(t, sizes)
        masks_from, level_deps = None, ()
        if t.prune.control != "none":
            ticket_key = keys.get(identity(_ticket_of(t)))
            if ticket_key is not None:  # level r needs the ticket's level r: it streams behind
                masks_from = ticket_key
                first_needed = 1 if branch_from == "level" else t.prune.rounds
                level_deps = ((ticket_key, first_needed),) if t.prune.rounds else ()
                epochs = t.prune.rounds * later
            else:  # its ticket is not in this sweep: the control computes it too
                epochs = t.prune.rounds * later * 2
        else:
            epochs = t.prune.rounds * later
        level1_from = None
        if arm_kind(t) == "one_shot" and t.prune.rounds:
            # level 1 of one-shot pruning is level 1 of the iterative ticket (the same scores of the
            # dense net, the same count, the same retraining): taken from the ticket, not retrained
            level1_from = keys.get(identity(_iterative_of(t)))
            if level1_from is not None:
                level_deps, epochs = ((level1_from, 1),), epochs - later
        units.append(
            Unit(
                t.key,
                arm_kind(t),
                t.to_dict(),
                (tid,),
                epochs,
                level_deps=level_deps,
                trunk=tid,
                masks_from=masks_from,
                levels=t.prune.rounds,
                level1_from=level1_from,
            )
        )
    return Plan(units, True, unshared, len(trials))
