"""The error of a bad ablation (its own module, so every config layer and registry can raise it)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad ablation: says which file, which field and what was expected."""

    def __init__(self, file: str | None, field_path: str, message: str) -> None:
        self.file, self.field, self.message = file, field_path, message
        where = f"{file}: " if file else ""
        super().__init__(f"{where}field '{field_path}': {message}")
