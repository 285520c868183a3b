"""An ablation's configuration, in layers where the smaller knows less.

- `specs`: the typed dataclasses with one-line docs, and the step-string parsers; plain data, no
  imports from the rest of the package (models, data and training import it).
- `errors`: ConfigError, the one error type of a bad ablation.
- `load`: a strict YAML reader, `--set` overrides, and type coercion of raw mappings into specs.
- `validate`: what a value means (ranges, finite numbers, cross-field rules); registry names are
  checked by the registries themselves (`Registry.check`).
- `grid`: the sweep's axes and arms, their product, and the names and tags of the trials.

This package's `__init__` imports nothing, so importing `lth_ray.config.specs` from the bottom of
the package never pulls in the registries above it.
"""
