"""The report's one error type, kept apart so every submodule can raise it without import cycles."""


class ReportError(Exception):
    """Nothing to report on: unknown store or experiment, no sweep, a sweep without trials."""
