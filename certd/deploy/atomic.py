"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import grp
import os
import pwd
import tempfile
from pathlib import Path


def _uid(owner: str | int | None) -> int:
    if owner is None:
        return -1
    if isinstance(owner, int):
        return owner
    try:
        return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ValueError(f"no such user {owner!r}") from None


def _gid(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int):
        return group
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group {group!r}") from None


def resolve_owner(owner: str | int | None, group: str | int | None) -> tuple[int, int]:
    """Numeric (uid, gid) for a configured owner/group; -1 where none is configured."""
    return _uid(owner), _gid(group)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp_beside(path: Path, data: bytes, mode: int, owner: str | int | None = None,
                      group: str | int | None = None) -> Path:
    """Write `data` to a synced temp file in `path`'s directory (same filesystem, so rename is atomic).

    The mode is set before any byte is written, so a private key is never readable by others.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        uid, gid = resolve_owner(owner, group)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return Path(tmp)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644,
                 owner: str | None = None, group: str | None = None) -> None:
    """temp file in the target dir, fsync, rename over the target, fsync the dir."""
    path = Path(path)
    tmp = write_temp_beside(path, data, mode, owner, group)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
