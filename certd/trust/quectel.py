"""Quectel module provisioning: the AT script and the checksum the module echoes.

After ``AT+QFUPL="UFS:<file>",<size>,<timeout>`` and the raw bytes, the module
answers ``+QFUPL: <size>,<checksum>``: a 16-bit XOR over the data taken as
big-endian 16-bit words, an odd last byte being the high byte of a final word
(Quectel FILE AT Commands Manuals, BG96/UGxx; confirmed by a 1187-byte upload
answered ``2d19`` on the Quectel forum). The technician compares it with the
value printed in the script before configuring the SSL context.

`KIT` is the `quectel` export format: the CA file to upload plus that script.
`client_certificate_kit` is the client certificate and key of a security profile 3 charger
with the AT lines for `AT+QSSLCFG="clientcert"` / `"clientkey"` (`certd chargers cert-kit`).
"""

from __future__ import annotations

from dataclasses import dataclass

from certd.config.trust import QuectelConfig
from certd.trust.formats import Renderer, VersionToExport


def xor16(data: bytes) -> int:
    """Quectel's QFUPL/QFDWL checksum of `data`."""
    checksum = 0
    for i in range(0, len(data) - 1, 2):
        checksum ^= (data[i] << 8) | data[i + 1]
    if len(data) % 2:
        checksum ^= data[-1] << 8
    return checksum


def format_checksum(value: int) -> str:
    """Lowercase hex as the module prints it (e.g. ``2d19``)."""
    return f"{value:04x}"


@dataclass(frozen=True)
class QuectelScript:
    text: str
    file_name: str
    size: int
    checksum: str


def provisioning_script(
    data: bytes, cfg: QuectelConfig, *, bundle: str, flavour: str, version: int, sha256: str,
    count: int, local_name: str | None = None,
) -> QuectelScript:
    """The AT lines that put `data` (the local file `local_name`) on the module as `cfg.file_name`
    and point SSL context `cfg.ssl_context` at it."""
    ufs = f"UFS:{cfg.file_name}"
    ctx = cfg.ssl_context
    size = len(data)
    checksum = format_checksum(xor16(data))
    local = local_name or cfg.file_name
    lines = [
        f"# certd: Quectel provisioning for bundle {bundle} ({flavour}) v{version}",
        f"# {count} CA certificate(s), sha256 {sha256}",
        f"# file {local} (stored on the module as {ufs}): {size} bytes, 16-bit XOR checksum {checksum}",
        "#",
        "# 1. Remove the previous file (answers +CME ERROR when there is none: that is fine).",
        f'AT+QFDEL="{ufs}"',
        f"# 2. Upload: after CONNECT send exactly the {size} bytes of {local}, nothing more.",
        f'AT+QFUPL="{ufs}",{size},{cfg.upload_timeout}',
        f"# expect: +QFUPL: {size},{checksum}",
        "#    (a different size or checksum means a corrupted upload: delete the file and upload again)",
        f"# 3. SSL context {ctx}: TLS, verify the server against the uploaded CA file, send SNI,",
        "#    check validity against the module's clock.",
        f'AT+QSSLCFG="sslversion",{ctx},{cfg.sslversion}',
        f'AT+QSSLCFG="seclevel",{ctx},2',
        f'AT+QSSLCFG="cacert",{ctx},"{ufs}"',
        f'AT+QSSLCFG="sni",{ctx},1',
        f'AT+QSSLCFG="ignorelocaltime",{ctx},0',
    ]
    if cfg.ciphersuite:
        lines.append(f'AT+QSSLCFG="ciphersuite",{ctx},{cfg.ciphersuite}')
    return QuectelScript("\n".join(lines) + "\n", cfg.file_name, size, checksum)


def quectel_local_name(version: VersionToExport, cfg: QuectelConfig) -> str:
    """The kit's CA file on disk: per bundle and flavour, so two kits can share a directory.

    The module still stores it as ``UFS:<file_name>``; only the local copy is named apart
    (two kits writing one ``ca.pem`` would leave one AT script expecting the other's size).
    """
    return f"{version.stem}.{cfg.file_name}"


def _kit(version: VersionToExport, cfg: QuectelConfig) -> dict[str, bytes]:
    data = version.pem.encode("ascii")
    local = quectel_local_name(version, cfg)
    script = provisioning_script(
        data, cfg, bundle=version.bundle, flavour=version.flavour, version=version.seq,
        sha256=version.sha256, count=version.pem.count("BEGIN CERTIFICATE"), local_name=local,
    )
    return {local: data, f"{version.stem}.quectel.at": script.text.encode()}


def _upload_hint(version: VersionToExport, cfg: QuectelConfig) -> str:
    data = version.pem.encode()
    return (f"upload {quectel_local_name(version, cfg)} as UFS:{cfg.file_name}: {len(data)} bytes; "
            f"the module must answer +QFUPL: {len(data)},{format_checksum(xor16(data))}")


KIT = Renderer(_kit, hint=_upload_hint)


# -- client certificate (security profile 3) -------------------------------------------------
#
# A charger whose TLS runs in the Quectel module authenticates with a key and certificate
# stored on the module. When the charger can make its own key and CSR, certd signs it over
# OCPP (SignCertificate) and the firmware uploads the result itself. For a module that
# cannot, `certd chargers cert-kit ID` makes the key, signs its certificate and writes this
# kit: the chain, the key (owner-only) and the AT lines that upload both and point the SSL
# context at them (seclevel 2: verify the server, present the client certificate).

CLIENT_CERT_FILE = "client.pem"
CLIENT_KEY_FILE = "client.key"


def _upload_lines(ufs: str, local: str, data: bytes, timeout: int) -> list[str]:
    checksum = format_checksum(xor16(data))
    return [
        f'AT+QFDEL="{ufs}"',
        f"# upload: after CONNECT send exactly the {len(data)} bytes of {local}, nothing more",
        f'AT+QFUPL="{ufs}",{len(data)},{timeout}',
        f"# expect: +QFUPL: {len(data)},{checksum}",
    ]


def client_certificate_script(chain: bytes, key: bytes, *, charger_id: str, serial: str,
                              ssl_context: int = 1, cert_local: str = CLIENT_CERT_FILE,
                              key_local: str = CLIENT_KEY_FILE, upload_timeout: int = 60) -> str:
    """AT lines for `AT+QSSLCFG="clientcert"` / `"clientkey"` (the key's bytes are not in them)."""
    cert_ufs, key_ufs = f"UFS:{CLIENT_CERT_FILE}", f"UFS:{CLIENT_KEY_FILE}"
    lines = [
        f"# certd: client certificate for charger {charger_id} (serial {serial}), security profile 3",
        "# The CA file for the server (AT+QSSLCFG=\"cacert\") comes from `certd bundle export --format quectel`.",
        "# 1. The certificate chain (leaf first).",
        *_upload_lines(cert_ufs, cert_local, chain, upload_timeout),
        "# 2. The private key: delete the local copy once the module holds it.",
        *_upload_lines(key_ufs, key_local, key, upload_timeout),
        f"# 3. SSL context {ssl_context}: present them, and verify the server (seclevel 2).",
        f'AT+QSSLCFG="clientcert",{ssl_context},"{cert_ufs}"',
        f'AT+QSSLCFG="clientkey",{ssl_context},"{key_ufs}"',
        f'AT+QSSLCFG="seclevel",{ssl_context},2',
    ]
    return "\n".join(lines) + "\n"


def client_certificate_kit(charger_id: str, chain: bytes, key: bytes, *, ssl_context: int,
                           serial: str) -> dict[str, bytes]:
    """File name -> bytes: `<id>.client.pem`, `<id>.client.key`, `<id>.client.quectel.at`."""
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in charger_id)
    cert_local, key_local = f"{stem}.{CLIENT_CERT_FILE}", f"{stem}.{CLIENT_KEY_FILE}"
    script = client_certificate_script(chain, key, charger_id=charger_id, serial=serial,
                                       ssl_context=ssl_context, cert_local=cert_local, key_local=key_local)
    return {cert_local: chain, key_local: key, f"{stem}.client.quectel.at": script.encode()}
