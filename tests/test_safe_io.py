"""The storage format of trial states, trunks and published masks: exact round trips, and a crafted
file (a pickle that runs a command, a header naming a foreign class) refused without running it."""

from __future__ import annotations

import io
import json
import os
import pickle

import pytest
import torch

from lth_ray.lottery import safe_io
from lth_ray.lottery.safe_io import UnsafeStateError
from lth_ray.lottery.train import EpochStats, TrainResult
from lth_ray.sweep.store import Store, SweepStore


def _state() -> dict:
    w = {"conv1.weight": torch.randn(4, 3, 3, 3), "fc.bias": torch.randn(7, dtype=torch.float64)}
    return {
        "version": 3,
        "config": {"seed": 2**62, "train": {"lr": 1e-3, "betas": [0.9, 0.999]}, "key": "a-b"},
        "masks": {"conv1.weight": torch.rand(4, 3, 3, 3) > 0.5},
        "score_best": w,
        "score_final": w,  # the same tensors twice: stored once, still shared when read back
        "rewind": None,
        "history": [{"round": 0, "val_loss": float("nan"), "test_acc": 0.1 + 0.2, "ok": True}],
        "curves": [[{"epoch": 1, "val_loss": float("inf")}]],
        "tuple": (1, "x", None),
        "~tricky": {"~t": "a plain key that looks like a tag"},
        "others": {
            "bf16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
            "scalar": torch.tensor(3),
            "empty": torch.empty(0, 5),
            "int8": torch.tensor([-1, 2], dtype=torch.int8),
        },
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_a_state_round_trips_exactly():
    state = _state()
    back = safe_io.loads(safe_io.dumps(state))
    assert _same(state, back)
    assert back["score_best"]["fc.bias"] is back["score_final"]["fc.bias"]
    assert back["history"][0]["test_acc"] == 0.1 + 0.2  # bit for bit, not a rounded repr


def test_a_trunk_round_trips_with_its_dataclasses_and_tuple_keys():
    w = {"fc.weight": torch.randn(3, 2)}
    trunk = TrainResult(
        best=w,
        final={"fc.weight": torch.randn(3, 2)},
        rewind=None,
        best_epoch=2,
        best_iteration=40,
        best_val_loss=0.25,
        best_val_acc=0.875,
        curve=[EpochStats(1, 20, 1.0, 0.5, 0.9, 0.6), EpochStats(2, 40, 0.5, 0.7, 0.25, 0.875)],
        rewinds={(1, "ep"): w, (500, "it"): {"fc.weight": torch.zeros(3, 2)}},
        seconds=1.5,
        images=1200,
    )
    back = safe_io.loads(safe_io.dumps(trunk))
    assert isinstance(back, TrainResult) and back.curve == trunk.curve
    assert set(back.rewinds) == {(1, "ep"), (500, "it")}
    assert torch.equal(back.rewinds[(1, "ep")]["fc.weight"], w["fc.weight"])
    assert (back.best_epoch, back.seconds, back.images) == (2, 1.5, 1200)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(marker) -> dict[str, bytes]:
    """Files someone with write access to the storage might leave there."""
    buf = io.BytesIO()
    torch.save({"trial": _Payload(marker)}, buf)
    header = json.dumps({"tree": {"~dc": "Popen", "fields": {}}, "tensors": []}).encode()
    return {
        "torch.save": buf.getvalue(),
        "pickle": pickle.dumps({"trial": _Payload(marker)}),
        "foreign class": safe_io.MAGIC + safe_io._LEN.pack(len(header)) + header,
        "bad dtype": safe_io.MAGIC
        + safe_io._LEN.pack(60)
        + json.dumps({"tree": {"~t": 0}, "tensors": [{"dtype": "object"}]}).encode().ljust(60),
        "truncated": safe_io.dumps({"w": torch.ones(100)})[:-8],
        "huge header": safe_io.MAGIC + safe_io._LEN.pack(2**62),
    }


@pytest.mark.parametrize("kind", list(_crafted("x")))
def test_a_crafted_state_is_refused_and_runs_nothing(kind, tmp_path):
    marker = tmp_path / "ran"
    data = _crafted(marker)[kind]
    (tmp_path / "trial_state").mkdir()
    (tmp_path / "trial_state" / "t.pt").write_bytes(data)
    with pytest.raises(UnsafeStateError, match="refused, not an lth_ray state file") as e:
        SweepStore(str(tmp_path)).load_state("t")
    assert "t.pt" in str(e.value)  # names the file
    assert not marker.exists()


def test_a_crafted_trunk_or_mask_in_units_is_refused(tmp_path):
    marker = tmp_path / "ran"
    store = Store(str(tmp_path / "units"))
    store.save("trunk-abc.pt", {"ok": 1})
    store.save("ticket/round_01.pt", {"masks": {}, "record": {}})
    for name in ("trunk-abc.pt", "ticket/round_01.pt"):
        (tmp_path / "units" / name).write_bytes(_crafted(marker)["torch.save"])
        with pytest.raises(UnsafeStateError, match="a pickle"):
            store.load(name)
    assert not marker.exists()


def test_what_cannot_be_stored_is_refused_when_writing():
    with pytest.raises(TypeError, match="cannot store"):
        safe_io.dumps({"f": lambda: 0})
    with pytest.raises(TypeError, match="dtype"):
        safe_io.dumps({"c": torch.zeros(2, dtype=torch.complex64)})


def test_the_searcher_state_is_json_and_a_pickle_is_refused(tmp_path):
    from lth_ray.sweep.plan import Plan, SweepSettings, Unit, tune_config
    from lth_ray.sweep.searcher import PlanSearcher

    units = [
        Unit("trunk-1", "trunk", {}, (), 3.0),
        Unit("t", "ticket", {"seed": 1}, ("trunk-1",), 6.0),
    ]
    settings = SweepSettings(ctx={}, threads=1, root="unused", shared=True)
    s = PlanSearcher(Plan(units, True, 9.0), settings)
    s.suggest("tune-1")
    s.on_trial_complete("tune-1")
    path = tmp_path / "searcher-state.json"
    s.save(str(path))
    json.loads(path.read_text())  # plain JSON
    again = PlanSearcher(Plan([], True, 0.0), settings)
    again.restore(str(path))
    assert again.units == s.units and again.order == s.order and again.done == {"trunk-1"}
    assert again.suggest("tune-2") == tune_config(units[1], settings)

    marker = tmp_path / "ran"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UnsafeStateError, match="not JSON"):
        again.restore(str(path))
    assert not marker.exists()
