"""Charge point ids from request paths: patterns, percent-decoding, the safe character set."""

import pytest

from certd.ocpp.ids import InvalidChargerId, PathPattern, charger_id_from_path, validate_id

PATTERNS = [PathPattern("/ocpp/{id}"), PathPattern("/{id}")]


@pytest.mark.parametrize("path, expected", [
    ("/ocpp/CP0001", "CP0001"),
    ("/CP0001", "CP0001"),
    ("/DE*BMW*0123456789", "DE*BMW*0123456789"),
    ("/DE%2ABMW%2A0123456789", "DE*BMW*0123456789"),
    ("/ocpp/DE%2aBMW%2a0123456789", "DE*BMW*0123456789"),
    ("/ocpp/a-b_c=d:e+f|g@h.i", "a-b_c=d:e+f|g@h.i"),
    ("/ocpp/CP1?token=x", "CP1"),
    ("/" + "x" * 48, "x" * 48),
])
def test_ids_accepted(path: str, expected: str) -> None:
    assert charger_id_from_path(path, PATTERNS) == expected


@pytest.mark.parametrize("path", [
    "/ocpp/CP%2F1",          # encoded slash
    "/ocpp/CP%201",          # encoded space
    "/ocpp/CP%00",           # NUL
    "/ocpp/CP%252A",         # double encoding: decodes to "CP%2A", '%' is not allowed
    "/ocpp/%C3%A9t%C3%A9",   # non-ASCII after decoding
    "/ocpp/%FF",             # not UTF-8
    "/ocpp/CP<script>",
    "/" + "x" * 49,          # too long
    "/ocpp/%",
    "/ocpp/CP1%0A",          # trailing newline: a `$` anchor matched before it
    "/ocpp/CP1%0a",
    "/ocpp/CP1\n",           # raw newline in the segment
])
def test_ids_refused(path: str) -> None:
    with pytest.raises(InvalidChargerId):
        charger_id_from_path(path, PATTERNS)


@pytest.mark.parametrize("path", ["/", "/ocpp/", "/other/CP1/extra", "/a/b/c"])
def test_paths_that_match_no_pattern(path: str) -> None:
    assert charger_id_from_path(path, PATTERNS) is None


def test_only_the_configured_prefix_matches() -> None:
    assert charger_id_from_path("/ocpp/CP1", [PathPattern("/cs/{id}")]) is None
    assert charger_id_from_path("/cs/CP1", [PathPattern("/cs/{id}")]) == "CP1"


def test_validate_id_for_cli_input() -> None:
    assert validate_id("DE*BMW*1") == "DE*BMW*1"
    with pytest.raises(InvalidChargerId, match="not a valid charge point id"):
        validate_id("with space")
    for with_newline in ("CP1\n", "\nCP1", "CP1\nCP2"):
        with pytest.raises(InvalidChargerId, match="not a valid charge point id"):
            validate_id(with_newline)
