"""Small configurations shared by the tests: tiny synthetic data and nets that train in a second."""

from __future__ import annotations

import copy

from lth_ray.specs import DatasetSpec, ModelSpec, PruneSpec, TrainSpec, TrialConfig


def tiny_trial(**prune: object) -> TrialConfig:
    cfg = TrialConfig(
        name="tiny",
        seed=0,
        dataset=DatasetSpec(
            name="synthetic",
            val_size=100,
            synthetic_train=500,
            synthetic_test=200,
            synthetic_shape=[3, 8, 8],
        ),
        model=ModelSpec(arch="conv2", padding="same", init="glorot_normal", width=0.125),
        train=TrainSpec(
            lr=3e-3, batch_size=50, initial="2ep", retrain="2ep", device="cpu", eval_batch_size=500
        ),
        prune=PruneSpec(
            criterion="magnitude", fraction=0.3, scope="global", exclude=["output"], rounds=2
        ),
    )
    for k, v in prune.items():
        setattr(cfg.prune, k, v)
    return cfg


def with_changes(cfg: TrialConfig, **changes: object) -> TrialConfig:
    """Copy with dotted-path changes, e.g. with_changes(cfg, **{"train.retrain": "3ep"})."""
    out = copy.deepcopy(cfg)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return out
