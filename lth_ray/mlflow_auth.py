"""MLflow's basic-auth app for a shared tracking server: `python -m lth_ray.mlflow_auth`.

An MLflow server without authentication lets anyone who reaches it read, change or delete every run
and write to the artifact store through its proxy. The cluster's server runs MLflow's basic-auth
app instead, with one admin user whose name and password come from MLflow's own credentials file
(`~/.mlflow/credentials`, which every MLflow client on the nodes also reads); nobody else has any
permission.

- `--new FILE`: write a credentials file with a fresh random password (mode 600), to copy to the
  nodes;
- `CONFIG`: write the server's auth config (mode 600) from the credentials of this machine, and
  beside it `flask_secret`, the key of the app's CSRF protection, once.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

USERNAME = "lth_ray"
AUTH_CACHE_S = 300


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def new_credentials(path: Path) -> None:
    _write_private(
        path,
        "[mlflow]\n"
        f"mlflow_tracking_username = {USERNAME}\n"
        f"mlflow_tracking_password = {secrets.token_urlsafe(24)}\n",
    )


def server_config(path: Path, database: Path) -> None:
    """The basic-auth app's config: the admin user from the credentials, no default permission."""
    from mlflow.utils.credentials import read_mlflow_creds

    creds = read_mlflow_creds()
    if not creds.username or not creds.password:
        raise SystemExit(
            "error: no MLflow credentials (~/.mlflow/credentials or MLFLOW_TRACKING_USERNAME and"
            " its password variable): create them with python -m lth_ray.mlflow_auth --new FILE"
        )
    _write_private(
        path,
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{database}\n"
        f"admin_username = {creds.username}\n"
        f"admin_password = {creds.password}\n"
        # A password check is a slow hash by design; every trial's every request would pay it.
        # Cached per server worker: a changed password takes effect within this many seconds.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lth_ray.mlflow_auth", description=__doc__.splitlines()[0]
    )
    ap.add_argument("path", help="the server's auth config to write (or, with --new, credentials)")
    ap.add_argument("--new", action="store_true", help="write new credentials to PATH instead")
    args = ap.parse_args(argv)
    path = Path(args.path).expanduser()
    if args.new:
        if path.exists():
            print(f"error: {path} exists; remove it first to replace the password", file=sys.stderr)
            return 2
        new_credentials(path)
    else:
        server_config(path, path.with_name("basic_auth.db"))
        key = path.with_name("flask_secret")  # CSRF key, the same for every server worker
        if not key.exists():
            _write_private(key, secrets.token_hex(32))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
