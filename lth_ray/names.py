"""Names that become folders and MLflow filters, and values that must not be shown to every reader.

An ablation's `name` and a `--sweep-id` name the storage and report folders and are matched in
MLflow searches: they are accepted only as slugs (no `..`, no `/`, no newline, bounded length), and
every value put into an MLflow filter is quoted. Credentials in URIs are redacted before a command
line is recorded as a tag.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SLUG_MAX = 100
SLUG = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{SLUG_MAX - 1}}}")
SLUG_RULE = f"1 to {SLUG_MAX} characters: letters, digits, '_', '-' and '.', starting with a letter or digit"


def slug_problem(value: object) -> str | None:
    """Why `value` is no safe folder name, or None."""
    if not isinstance(value, str):
        return f"expected a string of {SLUG_RULE}, got {value!r}"
    if SLUG.fullmatch(value) is None:
        shown = value if len(value) <= 40 else value[:40] + f"... ({len(value)} characters)"
        return f"expected {SLUG_RULE}; got {shown!r}"
    return None


def mlflow_quote(value: str) -> str:
    """`value` as a string literal of an MLflow search filter. MLflow's filters have no escape
    character: the text between the quotes is taken as it is, so a value is put in the quote it
    does not contain; one that holds both cannot be matched exactly and is refused."""
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{value!r} holds both kinds of quote: no MLflow filter can match it exactly")


def tag_equals(key: str, value: str) -> str:
    """The filter `tags.<key> = <value>`, both quoted."""
    return f"tags.`{key.replace('`', '')}` = {mlflow_quote(value)}"


SECRET_KEYS = re.compile(r"token|secret|password|passwd|pwd|key|signature|credential", re.I)
REDACTED = "***"


def redact_uri(uri: str) -> str:
    """A URI with its password (`user:pw@`) and secret-looking query values replaced by ***."""
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_KEYS.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, REDACTED if SECRET_KEYS.search(k) else v) for k, v in pairs], safe="*"
            )
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # nothing secret (and `sqlite:///x` keeps its three slashes)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with credentials in its URIs (`--tracking-uri`, `--storage`, ...) redacted."""
    out = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={redact_uri(value)}")
        else:
            out.append(redact_uri(arg))
    return out
