"""Fixtures for the issuance tests: a certd config on the sandbox world, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType

import pytest
import sqlalchemy as sa

from certd.config import Config, parse_config
from certd.sandbox import PebbleServer, SandboxWorld
from certd.sandbox.certd_config import TOKEN_ENV, certificate_toml, sandbox_config_toml, toml_str
from certd.store.db import make_engine, upgrade


def cert_toml(name: str, domains: list[str], target_dir: Path | None = None, extra: str = "") -> str:
    """All four files in `target_dir` (the obtain tests check each of them)."""
    return certificate_toml(name, domains, target_dir=target_dir, extra=extra)


@dataclass
class Setup:
    world: SandboxWorld
    pebble: PebbleServer
    tmp: Path
    config_path: Path
    config: Config
    engine: sa.Engine

    def env(self, *, token: str | None | EllipsisType = ...) -> dict[str, str]:
        """This process's environment with TOKEN_ENV set to `token` (default: the world's
        full-access token; None: unset)."""
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)
        if token is not None:
            env[TOKEN_ENV] = self.world.token if token is ... else token
        return env

    def cli(self, *args: str, timeout: float = 60,
            token: str | None | EllipsisType = ...) -> subprocess.CompletedProcess[str]:
        """`certd --config ... ARGS` as a process, its API token as for `env`."""
        return subprocess.run(
            [sys.executable, "-m", "certd", "--config", str(self.config_path), *args],
            env=self.env(token=token), capture_output=True, text=True, timeout=timeout,
        )


@pytest.fixture
def make_setup(cf_world: SandboxWorld, pebble: PebbleServer, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Callable[..., Setup]:
    """Write a config for the given certificates snippet and open its store."""
    monkeypatch.setenv(TOKEN_ENV, cf_world.token)

    def build(certificates: str, *, extra: str = "", db_url: str | None = None) -> Setup:
        if db_url:
            extra = f"database_url = {toml_str(db_url)}\n" + extra
        text = sandbox_config_toml(cf_world, pebble, tmp_path / "state", certificates, extra="")
        # top-level keys must come before the first table
        text = extra + "\n" + text if extra else text
        path = tmp_path / "certd.toml"
        path.write_text(text)
        config = parse_config(text, str(path))
        upgrade(config.db_url)
        return Setup(cf_world, pebble, tmp_path, path, config, make_engine(config.db_url))

    return build
