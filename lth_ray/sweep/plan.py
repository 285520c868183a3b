"""The sweep's plan: trials turned into units of work that compute each shared thing once.

- a trunk: the dense round 0 of every trial with the same seed, data, model and training (the prune
  settings do not touch round 0); it captures every rewind point its trials need;
- a trial unit per trial (ticket, one-shot, control): its rounds 1..R, starting from its trunk;
- a control also waits for its ticket, whose per-level masks it trains from instead of recomputing
  the ticket's whole trajectory.
`searcher.PlanSearcher` hands the units to Ray Tune as soon as what they need has finished, so the
trials still run packed, retried and resumable; no slot waits while runnable work exists. With sharing off
(`--no-share`), every trial is one self-contained unit, as a sweep of independent trials.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from lth_ray.config.feasible import train_size
from lth_ray.config.grid import arm_kind, identity
from lth_ray.lottery import schedule
from lth_ray.specs import TrialConfig

KINDS = ("trunk", "ticket", "one_shot", "control")


@dataclass(frozen=True)
class Unit:
    """One unit of work: what the plan schedules and what the trainable receives (through Ray
    Tune's config as `to_dict()`, plain JSON values)."""

    id: str  # the trial key, or "trunk-<hash>"
    kind: str  # trunk | ticket | one_shot | control
    trial: dict[str, Any]  # the TrialConfig (a trunk: of its first trial), as to_dict()
    deps: tuple[str, ...] = ()  # units that must have finished first
    epochs: float = 0.0  # planned training epochs of this unit
    trunk: str | None = None  # a trial: the unit that trained its round 0
    masks_from: str | None = None  # a control: the ticket whose per-level masks it trains from
    publish_masks: bool = False  # a ticket: store each level's mask for its controls
    rewinds: tuple[tuple[int, str], ...] = ()  # a trunk: every rewind point its trials need
    shared_by: int = 0  # a trunk: how many trials start from it

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["deps"], d["rewinds"] = list(self.deps), [list(r) for r in self.rewinds]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        return cls(
            **{
                **d,
                "deps": tuple(d.get("deps", ())),
                "rewinds": tuple((int(n), str(u)) for n, u in d.get("rewinds", ())),
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


def tune_config(unit: Unit, settings: SweepSettings) -> dict[str, Any]:
    """A unit as Ray Tune's trial config."""
    return {"unit": unit.to_dict(), "sweep": dataclasses.asdict(settings)}


def from_tune_config(config: dict[str, Any]) -> tuple[Unit, SweepSettings]:
    return Unit.from_dict(config["unit"]), SweepSettings(**config["sweep"])


@dataclass
class Plan:
    units: list[Unit]
    shared: bool
    unshared_epochs: float  # what the same trials cost when each computes everything itself
    trials: int = 0
    images_per_epoch: int | None = None  # the training set's size, when every trial fixes the same

    def images(self, epochs: float) -> float | None:
        return None if self.images_per_epoch is None else epochs * self.images_per_epoch

    @property
    def epochs(self) -> float:
        return sum(u.epochs for u in self.units)

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
        return (
            f"planned epochs: {self.epochs:,.0f} (without sharing: {self.unshared_epochs:,.0f})"
            f"{seen}; units: {kinds}; work {mode}"
        )


def round_epochs(t: TrialConfig) -> tuple[float, float]:
    """(round 0, each later round) in epochs, at the training set's size where the config fixes it."""
    return schedule.round_epochs(t, train_size(t.dataset))


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


def build_plan(trials: list[TrialConfig], share: bool = True) -> Plan:
    plan = _build_plan(trials, share)
    sizes = {train_size(t.dataset) for t in trials}
    size = sizes.pop() if len(sizes) == 1 else None
    return dataclasses.replace(plan, images_per_epoch=size)


def _build_plan(trials: list[TrialConfig], share: bool) -> Plan:
    unshared = 0.0
    for t in trials:
        first, later = round_epochs(t)
        unshared += first + t.prune.rounds * later * (2 if t.prune.control != "none" else 1)
    if not share:
        units = []
        for t in trials:
            first, later = round_epochs(t)
            mult = 2 if t.prune.control != "none" else 1
            kind = arm_kind(t)
            units.append(Unit(t.key, kind, t.to_dict(), (), first + t.prune.rounds * later * mult))
        return Plan(units, False, unshared, len(trials))
    keys = {identity(t): t.key for t in trials}
    trunks: dict[str, list[TrialConfig]] = {}
    for t in trials:
        trunks.setdefault(trunk_key(t), []).append(t)
    units: list[Unit] = []
    for tid, members in trunks.items():
        rewinds = sorted({schedule.parse_rewind(m.prune.rewind) for m in members} - {None})
        first = round_epochs(members[0])[0]
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
        _, later = round_epochs(t)
        masks_from, deps = None, (tid,)
        if t.prune.control != "none":
            ticket_key = keys.get(identity(_ticket_of(t)))
            if ticket_key is not None:
                masks_from, deps = ticket_key, (tid, ticket_key)
                epochs = t.prune.rounds * later
            else:  # its ticket is not in this sweep: the control computes it too
                epochs = t.prune.rounds * later * 2
        else:
            epochs = t.prune.rounds * later
        units.append(
            Unit(t.key, arm_kind(t), t.to_dict(), deps, epochs, trunk=tid, masks_from=masks_from)
        )
    # tickets whose per-level masks some control trains from publish them to the storage
    publishers = {u.masks_from for u in units if u.masks_from}
    units = [dataclasses.replace(u, publish_masks=u.id in publishers) for u in units]
    return Plan(units, True, unshared, len(trials))
