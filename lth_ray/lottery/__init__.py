"""The science: one lottery-ticket trial, its training, pruning, models and data (no Ray, no MLflow).

Usable alone, from a notebook or a script: `lottery.trial.LotteryTrial(cfg, load_dataset(cfg.dataset))`
runs the rounds of one `lth_ray.specs.TrialConfig`. Everything the sweep adds (scheduling, storage,
tracking) lives in `lth_ray.sweep`, above it.
"""
