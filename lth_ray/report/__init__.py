"""The report: tidy results and confidence-band plots of one sweep, read back from MLflow.

`python -m lth_ray.report [--tracking-uri URI] [--experiment NAME] [--sweep ID] [--out DIR]` and
`build_report(...)` (called by the sweep at its end) write to `reports/<sweep>/`:

- trials.csv / trials.parquet: one row per trial x round, MLflow units (accuracy fraction, sparsity
  fraction, weights_remaining %), status complete | incomplete;
- levels.csv: per criterion x prune rate x schedule x control x round: n, mean, t-interval;
- summary.csv / summary.md: per group: seeds, dense accuracy [95% CI], the sparsest level that
  still matches dense, the largest gain over dense, the chance-collapse level, early-stop epochs;
- figures (PNG + SVG): accuracy and early-stop epoch vs weights remaining, iterative vs one-shot,
  ticket vs random reinit, accuracy by prune rate.

Statistics are defined in `lth_ray.report.stats`; metric pulls are bulk (`lth_ray.report.mlflow_io`).
"""

from lth_ray.report.build import Report, build_report, main
from lth_ray.report.errors import ReportError

__all__ = ["Report", "ReportError", "build_report", "main"]
