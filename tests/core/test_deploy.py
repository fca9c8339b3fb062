"""Atomic deploys, archives and hooks, on real files."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from certd.deploy import files as deploy_mod
from certd.config import parse_config
from certd.deploy.files import deploy, write_targets
from certd.errors import DeployError
from certd.store.models import IssuedCertificate
from tests.waits import wait_until


def issued(serial: str = "01") -> IssuedCertificate:
    now = dt.datetime.now(dt.timezone.utc)
    return IssuedCertificate(
        id=1, name="web", domains="local.example.com", key_type="rsa2048", serial=serial,
        not_before=now, not_after=now + dt.timedelta(days=90), issuer="Test CA",
        cert_pem=f"-----BEGIN CERTIFICATE-----\nLEAF{serial}\n-----END CERTIFICATE-----\n",
        chain_pem="-----BEGIN CERTIFICATE-----\nINTERMEDIATE\n-----END CERTIFICATE-----\n",
        key_pem=f"-----BEGIN PRIVATE KEY-----\nKEY{serial}\n-----END PRIVATE KEY-----\n",
        chain_fingerprints="[]", directory_url="https://ca.test/dir",
    )


def cert_config(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    return parse_config(f'''
[[certificates]]
name = "web"
domains = ["local.example.com", "*.example.com"]
targets = [{{ fullchain = "{tmp_path}/ssl/fullchain.pem", privkey = "{tmp_path}/ssl/privkey.pem", mode = "0640" }}]
{extra}
''').certificates[0]


def test_modes_missing_dirs_and_live_copy(tmp_path: Path) -> None:
    result = write_targets(cert_config(tmp_path), issued(), str(tmp_path / "state"))
    ssl = tmp_path / "ssl"
    assert stat.S_IMODE((ssl / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((ssl / "fullchain.pem").stat().st_mode) == 0o640
    assert (ssl / "fullchain.pem").read_text().count("BEGIN CERTIFICATE") == 2
    live = tmp_path / "state" / "live" / "web"
    assert sorted(p.name for p in live.iterdir()) == ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]
    assert len(result.written) == 6 and result.archived == []


def test_identical_content_is_not_rewritten(tmp_path: Path) -> None:
    config = cert_config(tmp_path)
    write_targets(config, issued(), str(tmp_path / "state"))
    inode = (tmp_path / "ssl" / "fullchain.pem").stat().st_ino
    again = write_targets(config, issued(), str(tmp_path / "state"))
    assert again.written == [] and len(again.unchanged) == 6
    assert (tmp_path / "ssl" / "fullchain.pem").stat().st_ino == inode


def test_archive_keeps_a_few_versions(tmp_path: Path) -> None:
    config = cert_config(tmp_path)
    for n in range(8):
        write_targets(config, issued(f"{n:02d}"), str(tmp_path / "state"))
    versions = sorted((tmp_path / "state" / "archive" / "web").iterdir())
    assert len(versions) == 5
    newest = versions[-1]
    assert "LEAF06" in next(newest.glob("*fullchain.pem")).read_text()


def test_unwritable_target_replaces_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "ssl"
    blocker.write_text("a file where a directory should be")
    config = cert_config(tmp_path)
    with pytest.raises(DeployError, match="nothing was replaced"):
        write_targets(config, issued(), str(tmp_path / "state"))
    live = tmp_path / "state" / "live" / "web"
    assert not list(live.glob("*.pem"))  # the live copy was staged but not renamed
    assert not [p for p in live.iterdir() if p.name.endswith(".tmp")]


def test_hooks_get_certbot_variables_and_failures_are_reported(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "must-not-leak")
    out = tmp_path / "hook.out"
    config = cert_config(tmp_path, extra=(
        f'deploy_hooks = ["echo \\"$RENEWED_LINEAGE|$RENEWED_DOMAINS|${{CLOUDFLARE_API_TOKEN:-none}}\\" > {out}", '
        '"echo broken >&2; exit 3"]\nhook_timeout = 5'))
    result = deploy(config, issued(), str(tmp_path / "state"), hide_env=("CLOUDFLARE_API_TOKEN",))
    lineage, domains, token = out.read_text().strip().split("|")
    assert lineage == str(tmp_path / "state" / "live" / "web")
    assert (Path(lineage) / "fullchain.pem").exists()
    assert domains == "local.example.com *.example.com"
    assert token == "none"
    assert [h.ok for h in result.hooks] == [True, False]
    assert "exit 3: broken" in result.hooks[1].detail
    assert not result.hooks_ok
    assert (tmp_path / "ssl" / "fullchain.pem").exists()  # a failing hook never undoes the deploy


def test_hook_timeout(tmp_path: Path) -> None:
    config = cert_config(tmp_path, extra='deploy_hooks = ["sleep 5"]\nhook_timeout = 0.3')
    result = deploy(config, issued(), str(tmp_path / "state"))
    assert not result.hooks[0].ok and "timed out" in result.hooks[0].detail


def test_privkey_never_world_readable_even_while_written(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        write_targets(cert_config(tmp_path), issued(), str(tmp_path / "state"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "ssl" / "privkey.pem").stat().st_mode) == 0o600


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_hook_output_that_is_not_utf8_is_reported_not_raised(tmp_path: Path) -> None:
    config = cert_config(tmp_path, extra=(
        "deploy_hooks = [\"printf 'Zertifikat g\\\\374ltig\\\\n'\", "
        "\"printf 'Zertifikat ung\\\\374ltig\\\\n' >&2; exit 4\"]\nhook_timeout = 5"))
    result = deploy(config, issued(), str(tmp_path / "state"))
    assert result.hooks[0].ok
    assert not result.hooks[1].ok
    assert result.hooks[1].detail == "exit 4: Zertifikat ung\ufffdltig"


def test_hook_starting_a_background_service_is_not_a_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "svc.pid"
    config = cert_config(tmp_path, extra=(
        f'deploy_hooks = ["sleep 300 & echo $! > {pidfile}; echo started"]\nhook_timeout = 3'))
    try:
        result = deploy(config, issued(), str(tmp_path / "state"))
        assert result.hooks[0].ok, result.hooks[0].detail
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_timed_out_hook_is_killed_with_everything_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    config = cert_config(tmp_path, extra=(
        f'deploy_hooks = ["sleep 300 & echo $! > {pidfile}; wait"]\nhook_timeout = 2'))
    result = deploy(config, issued(), str(tmp_path / "state"))
    assert not result.hooks[0].ok and "timed out" in result.hooks[0].detail
    background = int(pidfile.read_text())  # the hook shell's child, certd's grandchild
    try:
        # SIGKILL was sent; give the kernel a moment to finish the exit
        wait_until(lambda: not _alive(background), 5, "the hook's child to exit")
        assert not _alive(background)
    finally:
        if _alive(background):
            os.kill(background, signal.SIGKILL)


def test_wrong_mode_on_identical_file_is_fixed(tmp_path: Path) -> None:
    config = cert_config(tmp_path)
    write_targets(config, issued(), str(tmp_path / "state"))
    key = tmp_path / "ssl" / "privkey.pem"
    os.chmod(key, 0o644)
    again = write_targets(config, issued(), str(tmp_path / "state"))
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert again.written == [str(key)]
    assert write_targets(config, issued(), str(tmp_path / "state")).written == []


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_wrong_owner_on_identical_file_is_fixed(tmp_path: Path) -> None:
    config = parse_config(f'''
[[certificates]]
name = "web"
domains = ["local.example.com"]
targets = [{{ privkey = "{tmp_path}/other/privkey.pem", owner = "0", group = "0" }}]
''').certificates[0]
    write_targets(config, issued(), str(tmp_path / "state"))
    key = tmp_path / "other" / "privkey.pem"
    os.chown(key, 4321, 4321)
    write_targets(config, issued(), str(tmp_path / "state"))
    assert (key.stat().st_uid, key.stat().st_gid) == (0, 0)


def _assert_old_files_and_no_temp_files(tmp_path: Path) -> None:
    ssl, live = tmp_path / "ssl", tmp_path / "state" / "live" / "web"
    assert "KEY01" in (ssl / "privkey.pem").read_text()
    for path in [live / "fullchain.pem", live / "cert.pem"]:
        assert "LEAF01" in path.read_text()
    assert "KEY01" in (live / "privkey.pem").read_text()
    assert stat.S_IMODE((live / "privkey.pem").stat().st_mode) == 0o600
    assert [p for d in (ssl, live) for p in d.iterdir() if p.name.endswith(".tmp")] == []


def test_failed_rename_puts_every_replaced_file_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollback is under test, so the rename is made to fail for one path at the module's boundary."""
    config = cert_config(tmp_path)
    write_targets(config, issued("01"), str(tmp_path / "state"))
    busy = tmp_path / "ssl" / "privkey.pem"
    real_replace = deploy_mod._replace

    def replace_failing_for_busy(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if Path(dst) == busy:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(deploy_mod, "_replace", replace_failing_for_busy)
    with pytest.raises(DeployError) as failure:
        write_targets(config, issued("02"), str(tmp_path / "state"))
    message = str(failure.value)
    assert f"cannot replace {busy} (Device or resource busy)" in message
    assert "restored" in message and "KEY" not in message
    assert "LEAF01" in (tmp_path / "ssl" / "fullchain.pem").read_text()  # replaced before the failure
    _assert_old_files_and_no_temp_files(tmp_path)


BUSY_TARGET_SCRIPT = """
import json, subprocess, sys
from pathlib import Path
from certd.deploy.files import write_targets
from certd.errors import DeployError
from tests.core.test_deploy import cert_config, issued
tmp_path = Path(sys.argv[1])
subprocess.run(["mount", "--bind", str(tmp_path / "host-copy.pem"), str(tmp_path / "ssl" / "privkey.pem")],
               check=True)
try:
    write_targets(cert_config(tmp_path), issued("02"), str(tmp_path / "state"))
    print(json.dumps({"error": None}))
except DeployError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_busy_target_file_rolls_the_deploy_back(tmp_path: Path) -> None:
    """A bind-mounted target (EBUSY on rename), in a private mount namespace that ends with the child."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs a mount namespace (unshare -m) to bind-mount a target file")
    write_targets(cert_config(tmp_path), issued("01"), str(tmp_path / "state"))
    (tmp_path / "host-copy.pem").write_text("the host's file\n")
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.run(["unshare", "-m", sys.executable, "-c", BUSY_TARGET_SCRIPT, str(tmp_path)],
                           cwd=repo, capture_output=True, text=True, check=True)
    error = json.loads(child.stdout.strip().splitlines()[-1])["error"]
    assert error and "cannot replace" in error and "privkey.pem (Device or resource busy)" in error
    assert "LEAF01" in (tmp_path / "ssl" / "fullchain.pem").read_text()
    _assert_old_files_and_no_temp_files(tmp_path)
