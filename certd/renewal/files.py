"""What the files consumers read look like next to the current certificate.

Read-only inspection for the renewal check: a target that lost its files (a restored
backup, a new target), holds other content, or has another mode or owner than the
config says needs the stored certificate written out again. The judgement on the
contents is certd.renewal.rules.deployed_file_problems; this module does the reading.
"""

from __future__ import annotations

import os
from pathlib import Path

from certd.config import CertificateConfig
from certd.deploy import files as deploy_mod
from certd.renewal import rules
from certd.store.models import IssuedCertificate


def expected_files(cert_cfg: CertificateConfig, issued: IssuedCertificate, state_dir: str) -> dict[str, bytes]:
    """Path → the bytes the current certificate puts there (certd's live copy and every target)."""
    content = deploy_mod.material(issued)
    expected: dict[str, bytes] = {}
    for target in [deploy_mod.live_target(state_dir, cert_cfg.name), *cert_cfg.targets]:
        for kind, path in target.paths().items():
            expected[path] = content[kind]
    return expected


def permission_problems(cert_cfg: CertificateConfig, state_dir: str) -> list[str]:
    """Target files whose mode or owner differ from the config (a privkey.pem someone made
    world-readable, an `owner` set after the files were written)."""
    from certd.deploy.atomic import resolve_owner

    problems = []
    for target in [deploy_mod.live_target(state_dir, cert_cfg.name), *cert_cfg.targets]:
        uid, gid = resolve_owner(target.owner, target.group)
        for kind, path in target.paths().items():
            try:
                info = os.stat(path)
            except OSError:
                continue  # missing or unreadable files are reported by content
            want = target.key_mode if kind == "privkey" else target.mode
            if info.st_mode & 0o777 != want:
                problems.append(f"{path} has mode {info.st_mode & 0o777:04o}, the config says {want:04o}")
            elif (uid != -1 and info.st_uid != uid) or (gid != -1 and info.st_gid != gid):
                problems.append(f"{path} is not owned by {target.owner or ''}:{target.group or ''} as configured")
    return problems


def read_files(paths: dict[str, bytes]) -> dict[str, rules.FileContent]:
    """What each path holds now: its bytes, None when missing, or the error reading it."""
    found: dict[str, rules.FileContent] = {}
    for path in paths:
        try:
            found[path] = Path(path).read_bytes()
        except FileNotFoundError:
            found[path] = None
        except OSError as exc:
            found[path] = exc
    return found


def content_problems(cert_cfg: CertificateConfig, issued: IssuedCertificate, state_dir: str) -> list[str]:
    """Files of `cert_cfg`'s targets that are missing, unreadable or hold something else than `issued`."""
    expected = expected_files(cert_cfg, issued, state_dir)
    return rules.deployed_file_problems(expected, read_files(expected))


def file_problems(cert_cfg: CertificateConfig, issued: IssuedCertificate, state_dir: str) -> list[str]:
    """Content problems first; when the contents are right, mode and owner problems."""
    return content_problems(cert_cfg, issued, state_dir) or permission_problems(cert_cfg, state_dir)
