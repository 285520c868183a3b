import csv
import json
import time
from pathlib import Path

import pytest
import torch

from lth_ray import trial as trial_cli

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_smoke_trial_cli_writes_its_outputs(tmp_path, capsys):
    t0 = time.monotonic()
    assert trial_cli.main([str(ROOT / "ablations" / "smoke.yaml"), "--out", str(tmp_path)]) == 0
    print(f"smoke trial: {time.monotonic() - t0:.1f} s")
    out = capsys.readouterr().out
    assert sum(line.startswith("round ") for line in out.splitlines()) == 4

    rows = list(csv.DictReader((tmp_path / "rounds.csv").open()))
    assert [int(r["round"]) for r in rows] == [0, 1, 2, 3]
    header = list(rows[0])
    assert header[:7] == [
        "round",
        "sparsity",
        "weights_remaining",
        "test_acc",
        "test_loss",
        "best_epoch",
        "skipped",
    ]
    remaining = [float(r["weights_remaining"]) for r in rows]
    assert remaining[0] == 100.0 and remaining == sorted(remaining, reverse=True)

    doc = json.loads((tmp_path / "trial.json").read_text())
    assert doc["config"]["prune"]["criterion"] == "magnitude"
    assert len(doc["rounds"]) == 4 and len(doc["epochs"][0]) == 3
    assert doc["config"]["train"]["precision"] == "auto"  # as configured ...
    assert doc["runtime"] == {"device": "cpu", "precision": "fp32"}  # ... and as it ran

    for r in range(4):
        masks = torch.load(tmp_path / f"round_{r:02d}" / "masks.pt")
        final = torch.load(tmp_path / f"round_{r:02d}" / "final.pt")
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        assert (r == 0) == (kept == total)
        for name, m in masks.items():
            assert torch.count_nonzero(final[name][~m]) == 0


def test_index_and_list(tmp_path, capsys):
    abl = str(ROOT / "ablations" / "smoke.yaml")
    assert trial_cli.main([abl, "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 10 and "stability-s1" in listing[3] and "reinit" in listing[-1]
    assert trial_cli.main([abl, "--index", "99"]) == 2
    assert "--index" in capsys.readouterr().err


def test_help_config_lists_fields(capsys):
    assert trial_cli.main(["--help-config"]) == 0
    out = capsys.readouterr().out
    assert "prune.criterion" in out and "train.eps" in out


@pytest.mark.skipif(
    not FASHION.is_dir(),
    reason="needs Debian's dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist)",
)
def test_real_fashion_mnist_lenet(tmp_path, capsys):
    """Real data: LeNet-300-100 on Fashion-MNIST reaches a sensible accuracy in one short epoch,
    and one magnitude-pruning round at 50% keeps it."""
    sets = [
        "dataset.name=fashion_mnist",
        f"dataset.root={FASHION}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "dataset.train_limit=12000",
        "dataset.test_limit=4000",
        "dataset.val_size=5000",
        "model.arch=lenet300_100",
        "model.width=1.0",
        "train.device=cpu",
        "train.lr=1.2e-3",
        "train.batch_size=60",
        "train.initial=1ep",
        "train.retrain=1ep",
        "prune.criterion=magnitude",
        "prune.fraction=0.5",
        "prune.rounds=1",
        "grid={}",  # the base trial alone
    ]
    args = [str(ROOT / "ablations" / "smoke.yaml"), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    assert trial_cli.main(args) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "rounds.csv").open()))
    dense, pruned = float(rows[0]["test_acc"]), float(rows[1]["test_acc"])
    print(f"Fashion-MNIST LeNet-300-100: dense {dense:.3f}, 50% pruned {pruned:.3f}")
    assert dense > 0.78  # chance is 0.10; a 1-epoch MLP typically lands at 0.80-0.85
    assert pruned > 0.78
    assert float(rows[1]["sparsity"]) == pytest.approx(0.5, abs=1e-4)
