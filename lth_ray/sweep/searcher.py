"""The plan's units handed to Ray Tune in dependency order: a unit is suggested once every unit it
depends on has finished (after Tune's own retries) and every level it waits for is published; a unit
whose dependency failed for good is never started.

A unit that streams behind another (a control behind its ticket) is released when the source's
first level it needs exists. When it catches up with its source it ends its Tune trial, saying
which level it waits for, and is released again (a new Tune trial, `part` n) once that level is
published: waiting holds no slot, and so no GPU. The searcher learns of published levels from the
source's results (`rounds_done` after each saved and published level).

With a `SweepStore` root it keeps its state there too (JSON types in `safe_io`'s format): the
units and settings once, before the first release, and what happened to them (a few KB) whenever
a unit finishes or publishes a level, so a long sweep does not rewrite its whole plan per event. `resumed` builds the searcher of a `--resume` from
it: the units done stay done, the ones that failed or were running are released again (each
continues from its own saved state), and Tune's pickled experiment files are never needed."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ray.tune.search import Searcher

from lth_ray.lottery.safe_io import UnsafeStateError
from lth_ray.sweep.plan import Plan, SweepSettings, Unit, tune_config
from lth_ray.sweep.progress import UNIT_WAITING_KEY
from lth_ray.sweep.store import SweepStore

TRIAL_KINDS = ("ticket", "one_shot", "control")  # units that are trials of the sweep


class PlanChangedError(ValueError):
    """--resume with an ablation whose plan is not the one the sweep started with."""


class PlanSearcher(Searcher):
    """Releases each unit to Tune once every unit it depends on has finished (after Tune's own
    retries); a unit whose dependency failed for good is never started."""

    def __init__(self, plan: Plan, settings: SweepSettings, store_root: str | None = None) -> None:
        super().__init__()
        self.store_root = store_root  # where the state is kept (None: only Tune's checkpoints)
        self.units = {u.id: u for u in plan.units}
        self.order = [u.id for u in plan.units]
        self.settings = settings
        self.issued: dict[str, str] = {}  # Tune trial id -> unit id
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.levels: dict[str, int] = {}  # unit -> its newest published level
        self.waits: dict[str, int] = {}  # a streaming unit that stopped -> the level it waits for
        self.ended: set[str] = set()  # Tune trials that ended waiting
        self.parts: dict[str, int] = {}  # unit -> Tune trials issued for it
        self._plan_kept = False  # the static part is in the storage

    def _sources(self, uid: str) -> list[str]:
        return [*self.units[uid].deps, *(src for src, _ in self.units[uid].level_deps)]

    def _blocked(self, uid: str) -> bool:
        return any(d in self.failed or self._blocked(d) for d in self._sources(uid))

    def _has_level(self, src: str, level: int) -> bool:
        return src in self.done or self.levels.get(src, -1) >= level

    def _ready(self, uid: str) -> bool:
        u = self.units[uid]
        at = self.waits.get(uid)
        return all(d in self.done for d in u.deps) and all(
            self._has_level(src, level if at is None else max(level, at))
            for src, level in u.level_deps
        )

    def suggest(self, trial_id: str) -> dict | str | None:
        running = {u for t, u in self.issued.items() if t not in self.ended}
        waiting = False
        for uid in self.order:
            if uid in running or uid in self.done:
                continue
            if self._blocked(uid):
                continue
            if self._ready(uid):
                self.issued[trial_id] = uid
                part = self.parts.get(uid, 0)
                self.parts[uid] = part + 1
                return tune_config(self.units[uid], self.settings, part)
            waiting = True
        return None if waiting else Searcher.FINISHED

    def save_state_now(self) -> None:
        if self.store_root is None:
            return
        store = SweepStore(self.store_root)
        if not self._plan_kept:
            store.save_searcher_plan(self._plan_state())
            self._plan_kept = True
        store.save_searcher(self._progress_state())

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        uid = self.issued.get(trial_id)
        if uid is not None and "rounds_done" in result:
            level = int(result["rounds_done"]) - 1
            if level > self.levels.get(uid, -1):
                self.levels[uid] = level
                self.save_state_now()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        uid = self.issued.get(trial_id)
        if uid is None:
            return
        if error:
            self.failed.add(uid)
        elif result and UNIT_WAITING_KEY in result:  # caught up with its source: released later
            self.waits[uid] = int(result[UNIT_WAITING_KEY])
            self.ended.add(trial_id)
        else:
            self.done.add(uid)
            self.failed.discard(uid)
        self.save_state_now()

    @classmethod
    def resumed(cls, plan: Plan, settings: SweepSettings, store_root: str) -> PlanSearcher | None:
        """The searcher of a resumed sweep, from the state in its storage (None: there is none).
        Raises PlanChangedError when `plan` is not the plan the sweep started with."""
        state = SweepStore(store_root).load_searcher()
        if state is None:
            return None
        saved = [Unit.from_dict(u).to_dict() for u in state["units"]]
        now = [u.to_dict() for u in plan.units]
        if saved != now:
            ids = {u["id"] for u in saved} ^ {u["id"] for u in now}
            first = next((a["id"] for a, b in zip(saved, now) if a != b), None)
            what = (
                f"units {', '.join(sorted(ids)[:3])} are in one plan only"
                if ids
                else f"unit {first} is not configured as before"
            )
            raise PlanChangedError(
                f"the ablation does not give the plan the sweep started with ({what}); resume"
                " with the same ablation file and --set options as the sweep was started with"
            )
        searcher = cls(plan, settings, store_root)
        searcher.set_state(state)
        searcher.settings = settings
        searcher._plan_kept = dataclasses.asdict(settings) == state["settings"]
        # Tune trial ids belong to the old experiment; failed units get another chance, as units
        # that were running do: each continues from its own saved state
        searcher.issued, searcher.ended, searcher.failed = {}, set(), set()
        return searcher

    def trials_done(self) -> int:
        """Trial units (tickets, baselines, controls) finished: before a resume, or in this run."""
        return sum(self.units[u].kind in TRIAL_KINDS for u in self.done)

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
        return {**self._plan_state(), **self._progress_state()}

    def _plan_state(self) -> dict[str, Any]:
        return {
            "units": [self.units[uid].to_dict() for uid in self.order],
            "settings": dataclasses.asdict(self.settings),
        }

    def _progress_state(self) -> dict[str, Any]:
        return {
            "issued": self.issued,
            "done": sorted(self.done),
            "failed": sorted(self.failed),
            "levels": self.levels,
            "waits": self.waits,
            "ended": sorted(self.ended),
            "parts": self.parts,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        units = [Unit.from_dict(u) for u in state["units"]]
        self.units, self.order = {u.id: u for u in units}, [u.id for u in units]
        self.settings = SweepSettings(**state["settings"])
        self.issued = {str(k): str(v) for k, v in state["issued"].items()}
        self.done, self.failed = set(state["done"]), set(state["failed"])
        self.levels = {str(k): int(v) for k, v in state.get("levels", {}).items()}
        self.waits = {str(k): int(v) for k, v in state.get("waits", {}).items()}
        self.ended = {str(t) for t in state.get("ended", ())}
        self.parts = {str(k): int(v) for k, v in state.get("parts", {}).items()}
