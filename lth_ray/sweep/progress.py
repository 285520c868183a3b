"""Console progress of a sweep: one line per finished round with overall trials/rounds, elapsed, ETA.

Replaces Ray Tune's own (very long) status tables. Also a watchdog: trials that wait for resources
the cluster does not have (CPUs, GPUs, custom resources) would stay PENDING forever, so the sweep
stops with a clear message instead; and a trial that reports a configuration error stops the sweep
at once (retrying it cannot help).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ray import tune


def hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class NoResourcesError(RuntimeError):
    """Trials cannot start: the cluster lacks what they ask for."""


class TrialConfigError(RuntimeError):
    """A trial could not start because of its configuration or data: not a fault to retry."""


CONFIG_ERROR_KEY = "config_error"  # the result key a trainable reports such an error under
UNIT_DONE_KEY = "unit_done"  # the result of a shared unit that is not a trial (a trunk)
UNIT_WAITING_KEY = "waits_for_level"  # a streaming unit stopped: the source level it waits for
PART_MARK = "~part"  # a streaming unit's later Tune trials: "<unit>~part<n>"


def unit_of(trial_name: str) -> str:
    """The unit a Tune trial's name belongs to (the parts of a streaming unit are one trial)."""
    return trial_name.split(PART_MARK)[0]


class SweepProgress(tune.Callback):
    def __init__(
        self,
        n_trials: int,
        rounds_per_trial: dict[str, int],
        pending_timeout_s: float = 300.0,
        has_resources: Callable[[], bool] | None = None,
        write: Callable[[str], None] | None = None,
        done_before: dict[str, int] | None = None,
        request: dict[str, float] | None = None,
        max_failures: int = 0,
        tracking_up: Callable[[], bool] | None = None,
        tracking_every_s: float = 15.0,
    ) -> None:
        # a tracking server that stops answering: trials wait and retry; the console says so
        self.tracking_up, self.tracking_every_s = tracking_up, tracking_every_s
        self.tracking_checked = time.monotonic()
        self.tracking_down_since: float | None = None
        self.request = {k: v for k, v in (request or {}).items() if v > 0}  # per trial
        self.max_failures = max_failures
        self.attempts: dict[str, int] = {}
        self.config_error: str | None = None
        self.n_trials = n_trials
        self.rounds_per_trial = rounds_per_trial  # trial name -> rounds a complete trial runs
        self.total_rounds = sum(rounds_per_trial.values())
        self.pending_timeout_s = pending_timeout_s
        self.has_resources = has_resources
        self.write = write or (lambda line: print(line, file=sys.stdout, flush=True))
        self.start = time.monotonic()
        # rounds finished by an earlier, interrupted run of this sweep (--resume)
        self.rounds_done: dict[str, int] = dict(done_before or {})
        self.rounds_at_start: dict[str, int] = dict(self.rounds_done)
        self.finished: set[str] = {
            k for k, v in self.rounds_done.items() if v >= rounds_per_trial.get(k, v + 1)
        }
        self.failed: set[str] = set()
        self.idle_since: float | None = None

    def _prefix(self) -> str:
        done = sum(self.rounds_done.values())
        elapsed = time.monotonic() - self.start
        new = done - sum(self.rounds_at_start.values())
        eta = "?" if new <= 0 else hms(elapsed / new * (self.total_rounds - done))
        return f"[{len(self.finished):3d}/{self.n_trials} trials | {done:4d}/{self.total_rounds} rounds | {hms(elapsed)} elapsed | ETA {eta}]"

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        name = unit_of(str(trial))
        if CONFIG_ERROR_KEY in result:  # raised at the step's end (Tune wraps errors raised here)
            self.config_error = self.config_error or f"trial {name}: {result[CONFIG_ERROR_KEY]}"
            return
        if UNIT_WAITING_KEY in result:
            self.write(
                f"{self._prefix()} {name} waits for level {int(result[UNIT_WAITING_KEY])} of"
                " its ticket (slot released)"
            )
            return
        if "instability_test" in result:
            self.write(
                f"{self._prefix()} {name} done: instability {100 * result['instability_test']:.2f}"
                " points (test)"
            )
            return
        if UNIT_DONE_KEY in result:
            self.write(
                f"{self._prefix()} {name} done: round 0 of {int(result.get('shared_by', 0))}"
                f" trials, trained once ({result.get('unit_seconds', 0.0):.1f} s)"
            )
            return
        rounds = int(result.get("rounds_done", 0))
        if rounds <= self.rounds_done.get(name, 0):  # a restarted trial re-reporting a known round
            if rounds >= self.rounds_per_trial.get(name, rounds + 1):
                self.finished.add(name)
            return
        if name not in self.rounds_at_start:
            self.rounds_at_start[name] = rounds - 1  # the first result of this run is one new round
        self.rounds_done[name] = rounds
        total = self.rounds_per_trial.get(name, rounds)
        if rounds >= total:
            self.finished.add(name)
        skip = " (skipped)" if result.get("skipped") else ""
        self.write(
            f"{self._prefix()} {name} round {int(result.get('round', rounds - 1))}/{total - 1}: "
            f"remaining {result.get('weights_remaining', float('nan')):.1f}%, "
            f"test acc {100 * result.get('test_acc', float('nan')):.2f}%, "
            f"best epoch {int(result.get('best_epoch', 0))}{skip}"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if UNIT_WAITING_KEY in (getattr(trial, "last_result", None) or {}):
            return  # released again when its ticket's next level exists
        if unit_of(str(trial)) in self.rounds_per_trial:  # shared units are not trials
            self.finished.add(unit_of(str(trial)))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        name = unit_of(str(trial))
        self.attempts[name] = self.attempts.get(name, 1) + 1
        self.write(
            f"{self._prefix()} {name} died; retrying from its last finished round "
            f"(attempt {self.attempts[name]} of {self.max_failures + 1})"
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed.add(unit_of(str(trial)))
        self.write(
            f"{self._prefix()} {trial} failed (attempt ended with an error; see {trial.local_path})"
        )

    def _watch_tracking(self) -> None:
        now = time.monotonic()
        if self.tracking_up is None or now - self.tracking_checked < self.tracking_every_s:
            return
        self.tracking_checked = now
        if self.tracking_up():
            if self.tracking_down_since is not None:
                self.write(f"{self._prefix()} tracking server reachable again")
            self.tracking_down_since = None
            return
        self.tracking_down_since = self.tracking_down_since or now
        self.write(
            f"{self._prefix()} tracking server unreachable, trials are retrying their MLflow writes"
            f" ({now - self.tracking_down_since:.0f} s)"
        )

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.config_error:
            raise TrialConfigError(self.config_error)
        self._watch_tracking()
        if self.has_resources is None:
            return
        running = [t for t in trials if t.status == "RUNNING"]
        pending = [t for t in trials if t.status == "PENDING"]
        if running or not pending:
            self.idle_since = None
            return
        now = time.monotonic()
        self.idle_since = self.idle_since or now
        if now - self.idle_since > self.pending_timeout_s and not self.has_resources():
            asked = ", ".join(f"{v:g} {k}" for k, v in self.request.items()) or "its resources"
            raise NoResourcesError(
                f"{len(pending)} trials waited {self.pending_timeout_s:.0f} s for resources the cluster "
                f"does not have (each asks for {asked}). Lower resources.cpu / resources.gpu, set "
                "resources.gpu_fallback: cpu, or add nodes that have them."
            )
