"""Bundle export formats: what a format name renders, looked up in one table.

The table is `certd.config.trust.EXPORT_FORMATS` (format name -> "module:attribute" of a
`Renderer`): config validation and the CLI read its names without importing cryptography,
and `renderer_for` imports a renderer the first time a bundle is exported in its format.
Adding a format is one `Renderer` and one line in that table.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from certd.config.trust import EXPORT_FORMATS, QuectelConfig
from certd.trust import TrustError


@dataclass(frozen=True)
class VersionToExport:
    bundle: str
    flavour: str
    seq: int
    sha256: str
    pem: str
    manifest: dict[str, object]

    @property
    def stem(self) -> str:
        """What every exported file name starts with: two bundles or flavours never share a file."""
        return f"{self.bundle}-{self.flavour}"


@dataclass(frozen=True)
class Renderer:
    """One export format.

    `render` gives the files (name -> bytes) a version consists of; `quectel` carries the
    bundle's `[trust.bundles.quectel]` options (formats without options ignore it).
    `leftovers` lists files in the export directory an earlier version's export may have
    written under names this version no longer uses (they are removed, and an export
    still holding one is stale); formats with fixed names leave it None.
    `hint` is what `certd bundle export` tells the operator after writing, if anything.
    """

    render: Callable[[VersionToExport, QuectelConfig], dict[str, bytes]]
    leftovers: Callable[[VersionToExport, Path], list[Path]] | None = None
    hint: Callable[[VersionToExport, QuectelConfig], str] | None = None


@functools.cache
def _load(reference: str) -> Renderer:
    module_name, _, attribute = reference.partition(":")
    renderer = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(renderer, Renderer):
        raise TypeError(f"{reference} is not a certd.trust.formats.Renderer")
    return renderer


def renderer_for(fmt: str) -> Renderer:
    """The renderer of format `fmt`; an unknown name is an error listing the known ones."""
    reference = EXPORT_FORMATS.get(fmt)
    if reference is None:
        raise TrustError(f"unknown export format {fmt!r} (use one of {', '.join(EXPORT_FORMATS)})")
    return _load(reference)


def stale_files(version: VersionToExport, fmt: str, out: Path, keep: dict[str, bytes]) -> list[Path]:
    """Files in `out` an earlier export of this bundle flavour in `fmt` left that `version` does not have."""
    leftovers = renderer_for(fmt).leftovers
    if leftovers is None:
        return []
    return [path for path in leftovers(version, out) if path.name not in keep]
