"""Publishing a study: report, ablation copy, run.md and the README block, all from the store."""

from __future__ import annotations

from pathlib import Path

from lth_ray.report.publish import END, START, main
from tests.test_report import design
from tests.test_report_synth import log_sweep, store_uri

ROOT = Path(__file__).resolve().parents[1]


def test_publish_writes_the_folder_and_the_readme_block(tmp_path):
    uri = store_uri(tmp_path)
    log_sweep(uri, "abl", "sw1", [t for t in design() if t.status == "FINISHED"], start_time=1_000)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nold text 99.9%\n{END}\nafter\n")
    out = tmp_path / "docs" / "results" / "abl"
    rc = main(
        [
            "--tracking-uri", uri, "--experiment", "abl",
            "--ablation", str(ROOT / "ablations" / "smoke.yaml"), "--out", str(out),
            "--command", "python -m lth_ray.sweep ablations/abl.yaml", "--readme", str(readme),
            "--allow-unclean",  # these synthetic sweeps record no code state
            "--note", "two jobs shared the cores", "--margin", "0.5",
        ]
    )  # fmt: skip
    assert rc == 0
    assert {"summary.md", "comparisons.csv", "smoke.yaml", "run.md"} <= {
        p.name for p in out.iterdir()
    }
    assert not list(out.glob("*.svg"))
    run = (out / "run.md").read_text()
    assert "python -m lth_ray.sweep ablations/abl.yaml" in run and "CPU cores" in run
    # run.md's publish command is this invocation, every option in it, quoted as a shell reads it
    cmd = next(ln for ln in run.splitlines() if ln.startswith("- Report and this folder"))
    assert "--note 'two jobs shared the cores' --margin 0.5" in cmd and "--allow-unclean" in cmd
    assert "- two jobs shared the cores" in run
    text = readme.read_text()
    assert "old text" not in text and text.startswith("# title") and text.endswith("after\n")
    summary = (out / "summary.md").read_text()
    verdict = summary.split("## Verdict", 1)[1].split("Details:", 1)[0].strip()
    assert verdict.splitlines()[0] in text  # the README's verdict is the report's
    assert "**Not reproducible from a recorded commit: the sweep recorded no code state" in run
    assert "python -m lth_ray.report.reproduce" in text
