"""A trial's arm: the ticket, its one-shot baseline or one of its controls, and how its key reads."""

from __future__ import annotations

from lth_ray.specs import TrialConfig

ARM_NAMES = {"one_shot": "oneshot", "reinit": "reinit", "random_mask": "rmask"}  # key suffixes


def arm_kind(t: TrialConfig) -> str:
    """'ticket', 'one_shot' or 'control': what a trial computes (the plan's unit kinds)."""
    if t.prune.control != "none":
        return "control"
    return "one_shot" if t.prune.schedule == "one_shot" else "ticket"


def arm_of(t: TrialConfig) -> str:
    """'ticket', 'one_shot', 'reinit', 'random_mask' (with the control's index when repeated)."""
    if arm_kind(t) != "control":
        return arm_kind(t)
    return t.prune.control + (f"#{t.prune.control_index}" if t.prune.control_index else "")
