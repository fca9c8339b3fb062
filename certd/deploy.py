"""Put issued material where consumers read it, keep the previous files, run hooks.

Every target's files are first written as synced temp files; only when all of
them exist are they renamed into place, back to back, so that a consumer never
pairs a new certificate with an old key for longer than two renames. A failing
hook is reported but never rolls the new certificate back.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from certd.config import CertificateConfig, TargetConfig
from certd.errors import DeployError
from certd.fileio import fsync_dir, write_temp_beside
from certd.store.models import IssuedCertificate

log = logging.getLogger(__name__)

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


def write_targets(cert_cfg: CertificateConfig, issued: IssuedCertificate, state_dir: str,
                  result: DeployResult | None = None) -> DeployResult:
    """Write every target's files atomically; files already identical are left alone."""
    result = result or DeployResult()
    content = material(issued)
    targets = [live_target(state_dir, cert_cfg.name), *cert_cfg.targets]
    staged: list[tuple[Path, Path]] = []
    try:
        for target in targets:
            for kind, raw_path in target.paths().items():
                path = Path(raw_path)
                data = content[kind]
                if path.exists() and path.read_bytes() == data:
                    result.unchanged.append(str(path))
                    continue
                mode = target.key_mode if kind == "privkey" else target.mode
                staged.append((write_temp_beside(path, data, mode, target.owner, target.group), path))
    except (OSError, ValueError) as exc:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise DeployError(f"certificate {cert_cfg.name}: cannot write {getattr(exc, 'filename', None) or ''}"
                          f" ({getattr(exc, 'strerror', None) or exc}); nothing was replaced") from None
    if not staged:
        return result
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    result.archived += _archive([p for _, p in staged], Path(state_dir) / "archive" / cert_cfg.name, stamp)
    for tmp, path in staged:
        os.replace(tmp, path)
        result.written.append(str(path))
    for directory in {path.parent for _, path in staged}:
        fsync_dir(directory)
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


def run_hooks(cert_cfg: CertificateConfig, state_dir: str,
              hide_env: tuple[str, ...] = ()) -> list[HookResult]:
    results = []
    env = hook_environment(cert_cfg, state_dir, hide_env)
    for command in cert_cfg.deploy_hooks:
        try:
            proc = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True,
                                  text=True, timeout=cert_cfg.hook_timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            results.append(HookResult(command, False, f"timed out after {cert_cfg.hook_timeout:.0f}s"))
            continue
        output = (proc.stderr or proc.stdout).strip()[-500:]
        if proc.returncode == 0:
            results.append(HookResult(command, True, "ok"))
        else:
            results.append(HookResult(command, False, f"exit {proc.returncode}: {output}"))
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
