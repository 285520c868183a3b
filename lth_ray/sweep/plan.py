"""The sweep's plan: trials turned into units of work that compute each shared thing once.

- a trunk: the dense round 0 of every trial with the same seed, data, model and training (the prune
  settings do not touch round 0); it captures every rewind point its trials need;
- a trial unit per trial (ticket, one-shot, control): its rounds 1..R, starting from its trunk;
- a control also waits for its ticket, whose per-level masks it trains from instead of recomputing
  the ticket's whole trajectory.
`PlanSearcher` hands the units to Ray Tune as soon as what they need has finished, so the trials
still run packed, retried and resumable; no slot waits while runnable work exists. With sharing off
(`--no-share`), every trial is one self-contained unit, as a sweep of independent trials.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from lth_ray.config.feasible import train_size
from lth_ray.config.grid import arm_kind, identity
from lth_ray.lottery import schedule
from lth_ray.specs import TrialConfig

KINDS = ("trunk", "ticket", "one_shot", "control")


@dataclass(frozen=True)
class Unit:
    id: str  # the trial key, or "trunk-<hash>"
    kind: str  # trunk | ticket | one_shot | control
    config: dict[str, Any]  # what the trainable receives (besides the sweep's static settings)
    deps: tuple[str, ...] = ()
    epochs: float = 0.0  # planned training epochs of this unit


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
            units.append(
                Unit(
                    t.key,
                    kind,
                    {"unit": "trial", "trial": t.to_dict()},
                    (),
                    first + t.prune.rounds * later * mult,
                )
            )
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
                {
                    "unit": "trunk",
                    "unit_id": tid,
                    "trial": members[0].to_dict(),
                    "rewinds": [list(r) for r in rewinds],  # type: ignore[arg-type]
                    "shared_by": len(members),
                },
                (),
                first,
            )
        )
    for t in trials:
        tid = trunk_key(t)
        _, later = round_epochs(t)
        config: dict[str, Any] = {"unit": "trial", "trial": t.to_dict(), "trunk": tid}
        deps: tuple[str, ...] = (tid,)
        if t.prune.control != "none":
            ticket_key = keys.get(identity(_ticket_of(t)))
            if ticket_key is not None:
                config["masks_from"] = ticket_key
                deps = (tid, ticket_key)
                epochs = t.prune.rounds * later
            else:  # its ticket is not in this sweep: the control computes it too
                epochs = t.prune.rounds * later * 2
        else:
            epochs = t.prune.rounds * later
        units.append(Unit(t.key, arm_kind(t), config, deps, epochs))
    # tickets whose per-level masks some control trains from publish them to the storage
    publishers = {u.config["masks_from"] for u in units if "masks_from" in u.config}
    units = [
        dataclasses.replace(u, config={**u.config, "publish_masks": True})
        if u.id in publishers
        else u
        for u in units
    ]
    return Plan(units, True, unshared, len(trials))


class PlanSearcher(Searcher):
    """Releases each unit to Tune once every unit it depends on has finished (after Tune's own
    retries); a unit whose dependency failed for good is never started."""

    def __init__(self, plan: Plan, static: dict[str, Any]) -> None:
        super().__init__()
        self.units = {u.id: u for u in plan.units}
        self.order = [u.id for u in plan.units]
        self.static = static
        self.issued: dict[str, str] = {}  # Tune trial id -> unit id
        self.done: set[str] = set()
        self.failed: set[str] = set()

    def _blocked(self, uid: str) -> bool:
        deps = self.units[uid].deps
        return any(d in self.failed or self._blocked(d) for d in deps)

    def suggest(self, trial_id: str) -> dict | str | None:
        started = set(self.issued.values())
        waiting = False
        for uid in self.order:
            if uid in started or uid in self.done:
                continue
            if self._blocked(uid):
                continue
            if all(d in self.done for d in self.units[uid].deps):
                self.issued[trial_id] = uid
                return {**self.static, **self.units[uid].config}
            waiting = True
        return None if waiting else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        uid = self.issued.get(trial_id)
        if uid is None:
            return
        if error:
            self.failed.add(uid)
        else:
            self.done.add(uid)
            self.failed.discard(uid)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def get_state(self) -> dict:
        return {
            "units": self.units,
            "order": self.order,
            "static": self.static,
            "issued": self.issued,
            "done": self.done,
            "failed": self.failed,
        }

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)
