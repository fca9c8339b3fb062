"""Does a certificate's CN/SAN cover a host name? (RFC 6125 style, one wildcard label)."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)]


def ip_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(a) for a in san.get_values_for_type(x509.IPAddress)]


def common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value).lower() if attrs else None


def covers(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def cert_matches(cert: x509.Certificate, host: str) -> bool:
    """SAN decides when present (as TLS clients do); the CN is checked too, as OCPP chargers do."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return str(address) in ip_names(cert)
    return any(covers(n, host) for n in dns_names(cert))


def describe_names(cert: x509.Certificate) -> str:
    names = dns_names(cert) + ip_names(cert)
    cn = common_name(cert)
    return f"CN={cn}, SAN={', '.join(names) or 'none'}"
