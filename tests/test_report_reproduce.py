"""A published study re-run by its own check: a tiny sweep's trials trained for real, logged as the
sweep logs them, published, then re-run and compared bit for bit with the published trials.csv."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from lth_ray import schema
from lth_ray.config.grid import expand_trials
from lth_ray.config.load import load_ablation
from lth_ray.lottery.data import load_dataset
from lth_ray.lottery.trial import LotteryTrial
from lth_ray.report import publish, reproduce
from lth_ray.report.provenance import PREFIX_CODE, code_problems, sweep_tags
from lth_ray.sweep.tracking import TrialRun, prepare_sweep, set_sweep_tags
from tests.test_report_synth import store_uri

ABLATION = """\
name: tiny_pub
description: a tiny published study
seed: 0
dataset: {name: synthetic, val_size: 100, synthetic_train: 400, synthetic_test: 200,
          synthetic_shape: [3, 8, 8]}
model: {arch: conv2, padding: same, init: glorot_normal, width: 0.125}
train: {lr: 3.0e-3, batch_size: 50, initial: 1ep, retrain: 1ep, device: cpu}
prune: {criterion: magnitude, fraction: 0.3, scope: global, exclude: [output], rounds: 2}
grid: {seed: [0, 1]}
controls: [reinit]
resources: {cpu: 1}
"""


def _run_sweep(uri: str, ablation: Path, digest: str | None = None) -> None:
    """The trials of the ablation trained here, logged with the sweep's own writer."""
    spec = load_ablation(str(ablation))
    trials = expand_trials(spec)
    ctx = prepare_sweep(uri, spec.name, "sw1", spec.description, spec.to_dict(), len(trials))
    tags = sweep_tags(threads=1) | {schema.TAG_COMMAND: f"python -m lth_ray.sweep {ablation}"}
    if digest:
        tags[PREFIX_CODE + "digest"] = digest
    set_sweep_tags(ctx, tags)
    data = load_dataset(trials[0].dataset)
    client = MlflowClient(uri)
    for cfg in trials:
        trial = LotteryTrial(cfg, data)
        run = TrialRun(ctx, cfg, data.num_classes)
        offset = 0
        for _ in range(trial.rounds_total):
            record = trial.run_round()
            run.log_round(record, trial.state.curves[-1], offset)
            offset += len(trial.state.curves[-1])
        client.set_terminated(run.run_id)
    client.set_terminated(ctx.parent_run_id)


@pytest.fixture(scope="module")
def published(tmp_path_factory, one_thread_module):
    folder = tmp_path_factory.mktemp("pub")
    ablation = folder / "tiny_pub.yaml"
    ablation.write_text(ABLATION)
    uri = store_uri(folder)
    _run_sweep(uri, ablation)
    out = folder / "docs" / "results" / "tiny_pub"
    # --allow-unclean: the test runs inside a working tree that may have uncommitted edits
    args = ["--tracking-uri", uri, "--experiment", "tiny_pub", "--ablation", str(ablation),
            "--out", str(out), "--allow-unclean"]  # fmt: skip
    assert publish.main(args) == 0
    return out


@pytest.fixture(scope="module")
def one_thread_module():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_published_trials_are_reproduced_bit_for_bit(published, capsys):
    run_md = (published / "run.md").read_text()
    assert "Code: commit" in run_md and "thread(s) per trial" in run_md and "CPU kernels" in run_md
    assert "lth_ray.report.reproduce" in run_md
    assert reproduce.main([str(published), "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    assert "6 round(s) of 2 trial(s) re-run with 1 thread(s): bit-identical" in out
    assert "magnitude-s0 round 2" in out and "magnitude-s0-reinit round 2" in out


def test_a_changed_number_fails_the_check(published, tmp_path, capsys):
    copy = tmp_path / "changed"
    copy.mkdir()
    for f in published.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    t = reproduce.published_trials(copy)  # read back exactly as the check reads it
    at = (t["trial"] == "magnitude-s0") & (t["round"] == 1)
    t.loc[at, "test_acc"] = t.loc[at, "test_acc"] + 1e-12  # the last bits only
    t.to_csv(copy / "trials.csv", index=False)
    assert reproduce.main([str(copy), "--trial", "magnitude-s0", "--rounds", "2"]) == 1
    out = capsys.readouterr().out
    assert "magnitude-s0 round 1 test_acc: reran" in out and "NOT identical" in out


def test_publish_refuses_code_that_is_not_the_sweeps(tmp_path):
    ablation = tmp_path / "tiny_pub.yaml"
    ablation.write_text(
        ABLATION.replace("seed: [0, 1]", "seed: [0]").replace("rounds: 2", "rounds: 0")
    )
    uri = store_uri(tmp_path)
    _run_sweep(uri, ablation, digest="0" * 64)  # as if the tree changed after the sweep started
    out = tmp_path / "out"
    args = ["--tracking-uri", uri, "--experiment", "tiny_pub", "--ablation", str(ablation),
            "--out", str(out)]  # fmt: skip
    with pytest.raises(SystemExit, match="refusing to publish: .*sources differ"):
        publish.main(args)
    assert not out.exists()  # refused before writing anything
    assert publish.main([*args, "--allow-unclean"]) == 0
    assert "**Not reproducible from a recorded commit:" in (out / "run.md").read_text()


def test_code_problems_name_each_reason():
    clean = {"commit": "abc", "dirty": "false", "digest": "d1"}
    assert code_problems(clean, clean) == []
    assert "dirty tree" in code_problems({**clean, "dirty": "true"}, clean)[0]
    assert "uncommitted" in code_problems(clean, {**clean, "dirty": "true"})[0]
    assert "sources differ" in code_problems(clean, {**clean, "digest": "d2"})[0]
    assert "recorded no code state" in code_problems({}, clean)[0]
