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
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from lth_ray.config.feasible import train_size
from lth_ray.config.grid import identity
from lth_ray.config.specs import TrialConfig, parse_rewind, parse_steps

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

    @property
    def epochs(self) -> float:
        return sum(u.epochs for u in self.units)

    def counts(self) -> dict[str, int]:
        c = Counter(u.kind for u in self.units)
        return {k: c[k] for k in KINDS if c[k]}

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts().items())
        mode = "shared" if self.shared else "not shared (--no-share)"
        return (
            f"planned epochs: {self.epochs:,.0f} (without sharing: {self.unshared_epochs:,.0f})"
            f"; units: {kinds}; work {mode}"
        )


def _iterations_per_epoch(t: TrialConfig) -> float | None:
    from lth_ray.train import batches_per_epoch

    n = train_size(t.dataset)
    return None if n is None else float(batches_per_epoch(max(n, 1), t.train))


def _epochs(t: TrialConfig, steps: tuple[int, str]) -> float:
    n, unit = steps
    if unit == "ep":
        return float(n)
    per_epoch = _iterations_per_epoch(t)
    return n / per_epoch if per_epoch else float(n)  # unknown data size: counted as given


def round_epochs(t: TrialConfig) -> tuple[float, float]:
    """(round 0, each later round) in epochs; later rounds after late rewinding train T - k."""
    first = _epochs(t, parse_steps(t.train.initial))
    later = _epochs(t, parse_steps(t.train.retrain))
    k = parse_rewind(t.prune.rewind)
    if k is not None and t.prune.rewind_budget == "remaining":
        later -= _epochs(t, k)
    return first, later


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
    unshared = 0.0
    for t in trials:
        first, later = round_epochs(t)
        unshared += first + t.prune.rounds * later * (2 if t.prune.control != "none" else 1)
    if not share:
        units = []
        for t in trials:
            first, later = round_epochs(t)
            mult = 2 if t.prune.control != "none" else 1
            kind = _kind(t)
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
        rewinds = sorted({parse_rewind(m.prune.rewind) for m in members} - {None})
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
        units.append(Unit(t.key, _kind(t), config, deps, epochs))
    # tickets whose per-level masks some control trains from publish them to the storage
    publishers = {u.config["masks_from"] for u in units if "masks_from" in u.config}
    units = [
        dataclasses.replace(u, config={**u.config, "publish_masks": True})
        if u.id in publishers
        else u
        for u in units
    ]
    return Plan(units, True, unshared, len(trials))


def _kind(t: TrialConfig) -> str:
    if t.prune.control != "none":
        return "control"
    return "one_shot" if t.prune.schedule == "one_shot" else "ticket"


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
        """JSON, not pickle: the searcher's state lies in the sweep's storage with the trials'."""
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        from lth_ray.safe_io import UnsafeStateError

        try:
            with open(checkpoint_path, encoding="utf-8") as f:
                state = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UnsafeStateError(
                f"{checkpoint_path}: refused, the searcher's state is not JSON ({e}); nothing in"
                " it was run"
            ) from None
        self.set_state(state)

    def get_state(self) -> dict:
        return {
            "units": [dataclasses.asdict(self.units[u]) for u in self.order],
            "static": self.static,
            "issued": self.issued,
            "done": sorted(self.done),
            "failed": sorted(self.failed),
        }

    def set_state(self, state: dict) -> None:
        units = [Unit(**{**u, "deps": tuple(u["deps"])}) for u in state["units"]]
        self.units = {u.id: u for u in units}
        self.order = [u.id for u in units]
        self.static = state["static"]
        self.issued = dict(state["issued"])
        self.done, self.failed = set(state["done"]), set(state["failed"])
