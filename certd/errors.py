"""User-facing errors.

Every message here may be printed or logged as is, so it must name what was
wrong and how to fix it, and must never contain a secret.
"""


class CertdError(Exception):
    """An error certd reports to the user (exit code 1 unless a subclass says otherwise)."""

    exit_code = 1


class ConfigError(CertdError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 2


class SecretError(CertdError):
    """A secret (token, key) could not be read safely."""

    exit_code = 2


class DNSProviderError(CertdError):
    """The DNS provider refused or failed a request."""


class PropagationTimeout(CertdError):
    """Authoritative nameservers did not serve the expected records in time."""


class IssuanceError(CertdError):
    """The ACME CA refused or failed an order."""


class DeployError(CertdError):
    """Writing certificate files to their targets failed."""
