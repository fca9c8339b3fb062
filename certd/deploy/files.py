"""Put issued material where consumers read it, keep the previous files, run hooks.

Every target's files are first written as synced temp files; only when all of
them exist are they renamed into place, back to back, so that a consumer never
pairs a new certificate with an old key for longer than two renames. If a rename
(or the directory sync after it) fails, the files already replaced get their
previous content back the same atomic way, no temp file is left behind and a
DeployError names the path. A file counts as unchanged only if its content, mode
and (when configured) owner/group all match, so a config change to `key_mode`
also fixes files already in place.

Hooks run in their own session with their output in temp files, not pipes: a
hook that starts a background service (`svc start &`) returns as soon as the
shell does, and a timed-out hook is killed with its whole process group. Output
is decoded leniently, since hooks print whatever their tools print.
A failing hook is reported but never rolls the new certificate back.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from certd.config import CertificateConfig, TargetConfig
from certd.errors import DeployError
from certd.deploy.atomic import fsync_dir, resolve_owner, write_temp_beside
from certd.store.models import IssuedCertificate

log = logging.getLogger("certd.deploy")

ARCHIVE_KEEP = 5
KIND_FILENAMES = {"fullchain": "fullchain.pem", "privkey": "privkey.pem",
                  "cert": "cert.pem", "chain": "chain.pem"}


def material(issued: IssuedCertificate) -> dict[str, bytes]:
    cert = issued.cert_pem.strip() + "\n"
    chain = issued.chain_pem.strip() + "\n" if issued.chain_pem.strip() else ""
    return {
        "cert": cert.encode(), "chain": chain.encode(),
        "fullchain": (cert + chain).encode(), "privkey": issued.key_pem.encode(),
    }


@dataclass
class HookResult:
    command: str
    ok: bool
    detail: str


@dataclass
class DeployResult:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    hooks: list[HookResult] = field(default_factory=list)

    @property
    def hooks_ok(self) -> bool:
        return all(h.ok for h in self.hooks)


def live_target(state_dir: str, name: str) -> TargetConfig:
    """certd's own copy (state_dir/live/NAME/), the RENEWED_LINEAGE of certbot-style hooks."""
    base = Path(state_dir) / "live" / name
    return TargetConfig(**{kind: str(base / filename) for kind, filename in KIND_FILENAMES.items()})


def _archive(paths: list[Path], archive_root: Path, stamp: str) -> list[str]:
    archived = []
    for index, path in enumerate(paths):
        if not path.exists():
            continue
        dest = archive_root / stamp / f"{index}-{path.name}"
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(path, dest)
        os.chmod(dest, 0o600)
        archived.append(str(dest))
    versions = sorted(p for p in archive_root.iterdir() if p.is_dir()) if archive_root.exists() else []
    for old in versions[:-ARCHIVE_KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return archived


_replace = os.replace  # the one rename call; tests make it fail for one path to exercise the rollback
HOOK_OUTPUT_TAIL = 500


@dataclass
class _Previous:
    """What a file held before a deploy, so a failed deploy can put it back."""

    data: bytes
    mode: int
    uid: int
    gid: int


@dataclass
class _Staged:
    tmp: Path
    path: Path
    previous: _Previous | None  # None: the file did not exist


def _read_previous(path: Path) -> _Previous | None:
    if not path.exists():
        return None
    info = path.stat()
    return _Previous(path.read_bytes(), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)


def _is_current(previous: _Previous | None, data: bytes, mode: int, uid: int, gid: int) -> bool:
    """Same content, mode and (where configured) owner/group: nothing to do."""
    return (previous is not None and previous.data == data and previous.mode == mode
            and uid in (-1, previous.uid) and gid in (-1, previous.gid))


def _stage(targets: list[TargetConfig], content: dict[str, bytes], result: DeployResult,
           staged: list[_Staged]) -> None:
    """Write a synced temp file beside every file that needs replacing (appended to `staged`)."""
    for target in targets:
        uid, gid = resolve_owner(target.owner, target.group)
        for kind, raw_path in target.paths().items():
            path = Path(raw_path)
            data = content[kind]
            mode = target.key_mode if kind == "privkey" else target.mode
            previous = _read_previous(path)
            if _is_current(previous, data, mode, uid, gid):
                result.unchanged.append(str(path))
                continue
            tmp = write_temp_beside(path, data, mode, target.owner, target.group)
            staged.append(_Staged(tmp, path, previous))


def _restore(entry: _Staged) -> None:
    """Put one replaced file back as it was (atomically), or remove it if it was new."""
    if entry.previous is None:
        entry.path.unlink(missing_ok=True)
        return
    old = entry.previous
    tmp = write_temp_beside(entry.path, old.data, old.mode, old.uid, old.gid)
    try:
        _replace(tmp, entry.path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _roll_back(replaced: list[_Staged]) -> list[str]:
    """Restore every replaced file; returns the paths that could not be restored."""
    failed = []
    for entry in reversed(replaced):
        try:
            _restore(entry)
        except OSError:
            failed.append(str(entry.path))
    for directory in {entry.path.parent for entry in replaced}:
        try:
            fsync_dir(directory)
        except OSError:
            pass  # the restore itself happened; only its durability is in doubt
    return failed


def _install(cert_name: str, staged: list[_Staged], result: DeployResult) -> None:
    """Rename every temp file into place and sync the directories; on any failure undo it all."""
    replaced: list[_Staged] = []
    where = ""
    try:
        for entry in staged:
            where = str(entry.path)
            _replace(entry.tmp, entry.path)
            replaced.append(entry)
        for directory in {entry.path.parent for entry in staged}:
            where = str(directory)
            fsync_dir(directory)
    except OSError as exc:
        for entry in staged:
            entry.tmp.unlink(missing_ok=True)
        not_restored = _roll_back(replaced)
        outcome = ("the previous files were restored" if not not_restored else
                   "could not restore " + ", ".join(not_restored) + " (they hold the new version)")
        raise DeployError(f"certificate {cert_name}: cannot replace {where} "
                          f"({exc.strerror or exc.__class__.__name__}); {outcome}") from None
    result.written += [str(entry.path) for entry in staged]


def write_targets(cert_cfg: CertificateConfig, issued: IssuedCertificate, state_dir: str,
                  result: DeployResult | None = None) -> DeployResult:
    """Write every target's files atomically; files already right (content, mode, owner) are left alone."""
    result = result or DeployResult()
    targets = [live_target(state_dir, cert_cfg.name), *cert_cfg.targets]
    staged: list[_Staged] = []
    try:
        _stage(targets, material(issued), result, staged)
    except (OSError, ValueError) as exc:
        for entry in staged:
            entry.tmp.unlink(missing_ok=True)
        raise DeployError(f"certificate {cert_cfg.name}: cannot write {getattr(exc, 'filename', None) or ''}"
                          f" ({getattr(exc, 'strerror', None) or exc}); nothing was replaced") from None
    if not staged:
        return result
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    archive_root = Path(state_dir) / "archive" / cert_cfg.name
    try:
        result.archived += _archive([entry.path for entry in staged], archive_root, stamp)
    except OSError as exc:
        for entry in staged:
            entry.tmp.unlink(missing_ok=True)
        raise DeployError(f"certificate {cert_cfg.name}: cannot archive the previous files in {archive_root}"
                          f" ({exc.strerror or exc.__class__.__name__}); nothing was replaced") from None
    try:
        _install(cert_cfg.name, staged, result)
    except DeployError:
        shutil.rmtree(archive_root / stamp, ignore_errors=True)  # the archived files are still live
        raise
    return result


def hook_environment(cert_cfg: CertificateConfig, state_dir: str,
                     hide_env: tuple[str, ...] = ()) -> dict[str, str]:
    """certbot's variables, so existing certbot deploy hooks work unchanged."""
    live = live_target(state_dir, cert_cfg.name)
    env = dict(os.environ)
    env.update({
        "RENEWED_LINEAGE": str(Path(state_dir) / "live" / cert_cfg.name),
        "RENEWED_DOMAINS": " ".join(cert_cfg.domains),
        "CERTD_CERT_NAME": cert_cfg.name,
        "CERTD_FULLCHAIN": live.fullchain or "",
        "CERTD_PRIVKEY": live.privkey or "",
    })
    for secret in hide_env:  # hooks never see certd's own tokens
        env.pop(secret, None)
    return env


def _output_tail(output: BinaryIO) -> str:
    """The last characters a hook printed, decoded whatever its encoding."""
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - 4 * HOOK_OUTPUT_TAIL))
    return output.read().decode("utf-8", errors="replace").strip()[-HOOK_OUTPUT_TAIL:]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the hook and everything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _run_hook(command: str, env: dict[str, str], timeout: float) -> HookResult:
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return HookResult(command, False, f"timed out after {timeout:.0f}s")
        except BaseException:
            _kill_group(proc)
            raise
        if returncode == 0:
            return HookResult(command, True, "ok")
        return HookResult(command, False, f"exit {returncode}: {_output_tail(stderr) or _output_tail(stdout)}")


def run_hooks(cert_cfg: CertificateConfig, state_dir: str,
              hide_env: tuple[str, ...] = ()) -> list[HookResult]:
    env = hook_environment(cert_cfg, state_dir, hide_env)
    results = [_run_hook(command, env, cert_cfg.hook_timeout) for command in cert_cfg.deploy_hooks]
    for hook in results:
        if hook.ok:
            log.info("%s: hook succeeded: %s", cert_cfg.name, hook.command)
        else:
            log.error("%s: hook failed: %s (%s)", cert_cfg.name, hook.command, hook.detail)
    return results


def deploy(cert_cfg: CertificateConfig, issued: IssuedCertificate, state_dir: str,
           hide_env: tuple[str, ...] = ()) -> DeployResult:
    result = write_targets(cert_cfg, issued, state_dir)
    result.hooks = run_hooks(cert_cfg, state_dir, hide_env)
    return result
