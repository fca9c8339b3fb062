"""Whether certd signs a charger's CSR (pure): the PEM text, who sent it, and the policy.

What certd enforces, from OCPP 2.0.1 Part 2 "Certificate Properties" and the security
profile 3 requirements (the 1.6 security whitepaper carries the same numbered text):

| requirement                                                          | certd                    |
|----------------------------------------------------------------------|--------------------------|
| A00.FR.502/503: RSA/DSA keys at least 2048 bits, EC at least 224     | RSA 2048..8192 (e=65537) or EC P-256 / P-384 |
| A00.FR.504/506: BSI-recommended algorithms, SHA-256 hashes           | CSR signed with SHA-256/384/512; the signature must verify |
| A00.FR.509: subject O = organization name of the certificate owner  | O must equal `[ocpp.charger_ca] organization` |
| A00.FR.511: charging station CN = its unique serial number, not a URL or IP address | CN must equal the charger id it connected with (its OCPP identity), which must not look like an IP address |
| A00.FR.404 / 405 (CSMS side): O contains the operator, CN the charger | the same checks at signing, and on profile-3 connections |
| CertificateSigningUse V2GCertificate (ISO 15118)                     | refused: out of scope   |

The charger must be known, enabled and approved. Extensions the CSR asks for (a SAN,
key usages) are not copied: certd builds the certificate from the checked subject alone
(see `certd.chargerca.authority.sign_leaf`).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

MAX_CSR_CHARS = 5500  # the schema's bound (1.6 and 2.0.1)
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
EC_CURVES = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}
CSR_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
V2G = "V2GCertificate"
CHARGING_STATION = "ChargingStationCertificate"


@dataclass(frozen=True)
class Standing:
    """What the registry says about the charger that sent the CSR (None row: unknown)."""

    enabled: bool
    approved: bool


@dataclass(frozen=True)
class Accepted:
    csr: x509.CertificateSigningRequest
    key_type: str  # rsa2048 | rsa3072 | ... | ec-p256 | ec-p384
    csr_sha256: str


@dataclass(frozen=True)
class Refused:
    reason: str  # certd's words, charger values escaped (for the audit log and the store)
    code: str  # 2.0.1 statusInfo.reasonCode (at most 20 characters)


Decision = Accepted | Refused


def _printable(value: str, limit: int = 64) -> str:
    text = value if value.isprintable() else value.encode("unicode_escape").decode("ascii")
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def describe_key(public_key: object) -> str | None:
    """rsa<bits> / ec-p256 / ec-p384, or None for anything else."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return EC_CURVES.get(public_key.curve.name)
    return None


def key_problem(public_key: object) -> str | None:
    """Why this public key is too weak or of a kind certd does not sign (None: fine)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.key_size
        if bits < RSA_MIN_BITS:
            return f"RSA key of {bits} bits (at least {RSA_MIN_BITS})"
        if bits > RSA_MAX_BITS:
            return f"RSA key of {bits} bits (at most {RSA_MAX_BITS})"
        if public_key.public_numbers().e != 65537:
            return "RSA public exponent other than 65537"
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in EC_CURVES:
            return f"EC curve {public_key.curve.name} (P-256 or P-384 only)"
        return None
    return f"{type(public_key).__name__.removeprefix('_')} key (RSA or EC P-256/P-384 only)"


def _single(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attr.value) for attr in name.get_attributes_for_oid(oid)]


def looks_like_address(value: str) -> bool:
    """A CN that reads as an IP address or a URL (A00.FR.511 forbids both for chargers)."""
    if "://" in value or "/" in value:
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def subject_problem(subject: x509.Name, charger_id: str, organization: str | None) -> str | None:
    """Why the subject does not name this charger of this operator (None: it does)."""
    common_names = _single(subject, NameOID.COMMON_NAME)
    if len(common_names) != 1:
        return f"the subject must carry exactly one CN (it has {len(common_names)})"
    common_name = common_names[0]
    if common_name != charger_id:
        return (f"the subject CN {_printable(common_name)} is not the charger's identity "
                f"{_printable(charger_id)}")
    if looks_like_address(common_name):
        return "the subject CN looks like an IP address or URL (OCPP A00.FR.511)"
    if organization is not None:
        orgs = _single(subject, NameOID.ORGANIZATION_NAME)
        if orgs != [organization]:
            shown = ", ".join(_printable(o) for o in orgs) or "none"
            return f"the subject O is {shown}, not the operator {_printable(organization)}"
    return None


def check_csr(pem: str, charger_id: str, standing: Standing | None, organization: str | None,
              certificate_type: str | None = None) -> Decision:
    """Sign or refuse: every rule in the module docstring, the cheapest first."""
    if certificate_type == V2G:
        return Refused("V2GCertificate requested: ISO 15118 certificates are out of scope",
                       "NotSupported")
    if certificate_type not in (None, CHARGING_STATION):
        return Refused(f"unknown certificateType {_printable(certificate_type)}", "InvalidCSR")
    if standing is None:
        return Refused("the charger is not in the registry", "UnknownCharger")
    if not standing.enabled:
        return Refused("the charger is disabled", "ChargerDisabled")
    if not standing.approved:
        return Refused("the charger awaits approval (certd chargers approve)", "NotApproved")
    if len(pem) > MAX_CSR_CHARS:
        return Refused(f"CSR of {len(pem)} characters (at most {MAX_CSR_CHARS})", "InvalidCSR")
    try:
        csr = x509.load_pem_x509_csr(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return Refused("not a PEM certificate signing request", "InvalidCSR")
    digest = hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return Refused("the CSR's public key cannot be read", "InvalidCSR")
    problem = key_problem(public_key)
    if problem:
        return Refused(f"weak or unsupported key: {problem}", "WeakKey")
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if not isinstance(algorithm, CSR_HASHES):
        name = algorithm.name if algorithm is not None else "unsupported"
        return Refused(f"CSR signed with {name} (SHA-256/384/512 only)", "InvalidCSR")
    if not csr.is_signature_valid:
        return Refused("the CSR's signature does not verify", "InvalidSignature")
    problem = subject_problem(csr.subject, charger_id, organization)
    if problem:
        return Refused(problem, "WrongIdentity")
    key_type = describe_key(public_key)
    assert key_type is not None  # key_problem accepted it
    return Accepted(csr, key_type, digest)
