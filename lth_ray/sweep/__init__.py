"""The orchestration: an ablation's trials as Ray Tune units, their storage and their MLflow runs.

`python -m lth_ray.sweep ABLATION.yaml` (`lth_ray.sweep.cli`); `lth_ray.sweep.api.run_sweep` from
Python. Importing this package imports neither Ray nor MLflow: each module does, where it needs them.
"""
