"""Read secrets from an environment variable or a file, never from the config itself.

A secret file that group or others can read is refused: a token that leaked
through a world-readable file is a leaked token.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from certd.errors import SecretError


def read_secret_file(path: str | os.PathLike[str], what: str) -> str:
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SecretError(f"{what}: file {path} does not exist") from None
    except OSError as exc:
        raise SecretError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"{what}: {path} is readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise SecretError(f"{what}: {path} is empty")
    return value


def read_secret(*, env: str | None, file: str | None, what: str, required: bool = True) -> str | None:
    """The secret from `file` if set, else from `env`; None when optional and absent."""
    if file:
        return read_secret_file(file, what)
    if env:
        value = os.environ.get(env, "").strip()
        if value:
            return value
    if required:
        where = f"environment variable {env}" if env else "a file or environment variable"
        raise SecretError(f"{what} is not set: put it in {where}")
    return None
