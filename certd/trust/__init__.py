"""Fleet CA bundles: which CA certificates a fleet must trust, versioned, exported, pushed.

Pure decisions (path building, bundle content, versions, diffs, Quectel checksums)
live in `chains`, `bundles`, `quectel`; the I/O around them (store, files, pushes)
in `anchors`, `chain_records`, `export`, `outbox` and `track` (the entry point called
after every issuance). The seams: `formats` (export format -> renderer, per the table
`certd.config.trust.EXPORT_FORMATS`) and `push` (registry kind -> push target, per
`certd.config.trust.REGISTRY_KINDS`; `http_registry` is the `http` kind).
"""

from certd.errors import CertdError


class TrustError(CertdError):
    """A chain, anchor set or bundle cannot be handled as configured."""


class UnanchoredChainError(TrustError):
    """A certificate chain ends at a CA that is not in the configured anchor set."""
