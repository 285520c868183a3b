"""An ablation's configuration, in layers where the smaller knows less.

The typed dataclasses themselves are `lth_ray.specs` (the ground floor, which the science imports);
this package turns files into them and checks them against the science below it:

- `errors`: ConfigError, the one error type of a bad ablation.
- `coerce`: raw YAML values into the specs' types, naming the field on failure.
- `load`: a strict YAML reader, `--set` overrides, plugins, and coercion of raw mappings into specs.
- `validate`: what a value means (ranges, cross-field rules, registry names via `Registry.check`).
- `feasible`: checks that need the model (built on the meta device) and the data's shape.
- `grid`: the sweep's axes and arms, their product, and the names and tags of the trials.
"""
