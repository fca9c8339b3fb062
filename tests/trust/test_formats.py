"""The export format table: config validation, `--format` choices and staleness checks all read it."""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from certd.cli import build_parser
from certd.config import parse_config
from certd.config.trust import EXPORT_FORMATS, BundleExportConfig, QuectelConfig
from certd.errors import ConfigError
from certd.trust.certs import parse_pem_bundle
from certd.trust.export import export_is_current, export_version, render
from certd.trust.formats import Renderer, VersionToExport, renderer_for
from tests import pki


def version_of(seq: int, *cas: pki.Ca) -> VersionToExport:
    pem = pki.pem_of(*cas)
    return VersionToExport(bundle="fleet", flavour="full", seq=seq,
                           sha256=hashlib.sha256(pem.encode()).hexdigest(), pem=pem,
                           manifest={"bundle": "fleet", "version": seq})


def export_format_choices(parser: argparse.ArgumentParser) -> list[str]:
    """The choices of `certd bundle export --format`, read from the parser the CLI runs."""
    for command in ("bundle", "export"):
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subparsers.choices[command]
    return list(next(a for a in parser._actions if "--format" in a.option_strings).choices)


def export_toml(fmt: str, out: str = "/var/lib/certd/bundles") -> str:
    return (f'[[trust.bundles]]\nname = "fleet"\n'
            f'[[trust.bundles.exports]]\nformat = "{fmt}"\ndir = "{out}"\n')


def test_every_format_is_valid_config_has_a_renderer_and_a_cli_choice() -> None:
    root = pki.root("Table Root")
    version = version_of(1, root, pki.intermediate("Table Inter", root))
    assert export_format_choices(build_parser()) == list(EXPORT_FORMATS)
    for fmt in EXPORT_FORMATS:
        assert BundleExportConfig(format=fmt, dir="/x").format == fmt
        assert parse_config(export_toml(fmt)).trust.bundles[0].exports[0].format == fmt
        assert isinstance(renderer_for(fmt), Renderer)
        files = render(version, fmt, QuectelConfig())
        assert files and all(name.startswith(version.stem) for name in files), fmt


def test_unknown_format_error_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(export_toml("zip"))
    assert ("trust.bundles[0].exports[0].format: unknown export format 'zip' "
            "(use one of pem, der, manifest, quectel)") in str(caught.value)


def test_loading_a_config_imports_no_renderer() -> None:
    """The table names renderers as strings: config validation stays light (no cryptography)."""
    code = ("import sys; from certd.config import parse_config; "
            f"parse_config({export_toml('quectel')!r}); "
            "print(sorted(m for m in sys.modules if m.startswith(('cryptography', 'certd.trust'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# A format added the way a new one would be: one renderer and one line in EXPORT_FORMATS.
def _split_prefix(version: VersionToExport) -> str:
    return f"{version.stem}-split-"


def _split(version: VersionToExport, _quectel: QuectelConfig) -> dict[str, bytes]:
    """One PEM file per certificate, named after its fingerprint (so names change between versions)."""
    return {f"{_split_prefix(version)}{cert.fingerprint[:12]}.pem": cert.pem.encode()
            for cert in parse_pem_bundle(version.pem, f"bundle {version.bundle}")}


def _split_leftovers(version: VersionToExport, out: Path) -> list[Path]:
    return list(out.glob(f"{_split_prefix(version)}*.pem"))


SPLIT = Renderer(_split, leftovers=_split_leftovers)


def test_a_new_format_is_one_renderer_and_one_table_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(EXPORT_FORMATS, "split", f"{__name__}:SPLIT")
    assert parse_config(export_toml("split", str(tmp_path))).trust.bundles[0].exports[0].format == "split"
    assert "split" in export_format_choices(build_parser())

    old_root, new_root = pki.root("Split Old Root"), pki.root("Split New Root")
    v1, v2 = version_of(1, old_root), version_of(2, new_root)
    (old_file,) = export_version(v1, "split", tmp_path)
    assert export_is_current(v1, "split", tmp_path) and not export_is_current(v2, "split", tmp_path)
    (new_file,) = export_version(v2, "split", tmp_path)
    assert not old_file.exists() and new_file.read_text() == new_root.pem  # v1's file is gone
    assert export_is_current(v2, "split", tmp_path)
    old_file.write_text(old_root.pem)  # a leftover of an earlier version makes the export stale
    assert not export_is_current(v2, "split", tmp_path)
