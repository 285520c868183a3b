"""The plan's units handed to Ray Tune in dependency order: a unit is suggested once every unit it
depends on has finished (after Tune's own retries); a unit whose dependency failed for good is
never started."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ray.tune.search import Searcher

from lth_ray.lottery.safe_io import UnsafeStateError
from lth_ray.sweep.plan import Plan, SweepSettings, Unit, tune_config


class PlanSearcher(Searcher):
    """Releases each unit to Tune once every unit it depends on has finished (after Tune's own
    retries); a unit whose dependency failed for good is never started."""

    def __init__(self, plan: Plan, settings: SweepSettings) -> None:
        super().__init__()
        self.units = {u.id: u for u in plan.units}
        self.order = [u.id for u in plan.units]
        self.settings = settings
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
                return tune_config(self.units[uid], self.settings)
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
        """The searcher's state as JSON: nothing read back from the storage can run code."""
        with open(checkpoint_path, "w") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        try:
            with open(checkpoint_path, encoding="utf-8") as f:
                state = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UnsafeStateError(
                f"{checkpoint_path}: refused, the searcher's state is not JSON ({e}); nothing in"
                " it was run"
            ) from None
        self.set_state(state)

    def get_state(self) -> dict[str, Any]:
        return {
            "units": [self.units[uid].to_dict() for uid in self.order],
            "settings": dataclasses.asdict(self.settings),
            "issued": self.issued,
            "done": sorted(self.done),
            "failed": sorted(self.failed),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        units = [Unit.from_dict(u) for u in state["units"]]
        self.units, self.order = {u.id: u for u in units}, [u.id for u in units]
        self.settings = SweepSettings(**state["settings"])
        self.issued = {str(k): str(v) for k, v in state["issued"].items()}
        self.done, self.failed = set(state["done"]), set(state["failed"])
