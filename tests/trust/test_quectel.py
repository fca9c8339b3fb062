"""Quectel AT script and the 16-bit XOR checksum the module echoes."""

from __future__ import annotations

from certd.config.trust import QuectelConfig
from certd.trust.quectel import format_checksum, provisioning_script, xor16


def reference_xor16(data: bytes) -> int:
    """Straight from the manual's words: big-endian 16-bit words, odd byte as the high half."""
    padded = data + (b"\x00" if len(data) % 2 else b"")
    value = 0
    for i in range(0, len(padded), 2):
        value ^= int.from_bytes(padded[i:i + 2], "big")
    return value


def test_xor16_known_vectors() -> None:
    assert xor16(b"") == 0
    assert xor16(b"\x12\x34") == 0x1234
    assert xor16(b"\x12\x34\x12\x34") == 0
    assert xor16(b"\xab") == 0xAB00
    assert xor16(b"\x12\x34\x56") == 0x1234 ^ 0x5600
    assert xor16(b"AB") == 0x4142


def test_xor16_matches_reference_on_many_lengths() -> None:
    import os

    for length in range(0, 300, 7):
        data = os.urandom(length)
        assert xor16(data) == reference_xor16(data)


def test_format_checksum_is_four_lowercase_hex_digits() -> None:
    assert format_checksum(0x2D19) == "2d19"
    assert format_checksum(0x00AB) == "00ab"


def test_script_lines() -> None:
    data = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    cfg = QuectelConfig(file_name="fleet.pem", ssl_context=2, sslversion=3, ciphersuite="0xc02f",
                        upload_timeout=90)
    script = provisioning_script(data, cfg, bundle="fleet", flavour="full", version=3,
                                 sha256="ab" * 32, count=1)
    lines = script.text.splitlines()
    assert f'AT+QFUPL="UFS:fleet.pem",{len(data)},90' in lines
    assert f"# expect: +QFUPL: {len(data)},{format_checksum(xor16(data))}" in lines
    assert lines.index('AT+QFDEL="UFS:fleet.pem"') < lines.index(f'AT+QFUPL="UFS:fleet.pem",{len(data)},90')
    for expected in ['AT+QSSLCFG="sslversion",2,3', 'AT+QSSLCFG="seclevel",2,2',
                     'AT+QSSLCFG="cacert",2,"UFS:fleet.pem"', 'AT+QSSLCFG="sni",2,1',
                     'AT+QSSLCFG="ignorelocaltime",2,0', 'AT+QSSLCFG="ciphersuite",2,0xC02F']:
        assert expected in lines
    assert script.size == len(data) and script.checksum == format_checksum(xor16(data))


def test_script_without_ciphersuite_and_defaults() -> None:
    script = provisioning_script(b"x" * 11, QuectelConfig(), bundle="b", flavour="roots", version=1,
                                 sha256="00" * 32, count=1)
    assert not any("ciphersuite" in line for line in script.text.splitlines() if line.startswith("AT"))
    assert 'AT+QSSLCFG="sslversion",1,4' in script.text
    assert 'AT+QFUPL="UFS:ca.pem",11,60' in script.text
