"""Outgoing messages: each builder picks the version's payload and reads its answer back neutrally.

The end-to-end exchange with simulated 1.6 and 2.0.1 chargers is in tests/rollover/test_provision.py;
these pin the per-version shapes (including 2.1, which no simulated charger speaks).
"""

from __future__ import annotations

from typing import Any

import pytest
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21

from certd.ocpp import calls

CALLS = {"ocpp1.6": call16, "ocpp2.0.1": call201, "ocpp2.1": call21}
RESULTS_2X = {"ocpp2.0.1": result201, "ocpp2.1": result21}
HASH = {"hash_algorithm": "SHA256", "issuer_name_hash": "AB", "issuer_key_hash": "CD", "serial_number": "0x00F1"}
PARSED = ("SHA256", "ab", "cd", "f1")


@pytest.mark.parametrize("version", sorted(CALLS))
def test_install_certificate_payload_per_version(version: str) -> None:
    request = calls.install_certificate(version, "PEM")
    assert isinstance(request.payload, CALLS[version].InstallCertificate)
    assert request.action == "InstallCertificate"
    assert request.payload.certificate == "PEM"
    assert request.payload.certificate_type == (
        "CentralSystemRootCertificate" if version == "ocpp1.6" else "CSMSRootCertificate")


def test_install_answers_read_alike() -> None:
    read16 = calls.install_certificate("ocpp1.6", "PEM").read
    read201 = calls.install_certificate("ocpp2.0.1", "PEM").read
    assert read16(result16.InstallCertificate(status="Rejected")) == calls.InstallAnswer("Rejected", None)
    assert read201(result201.InstallCertificate(status="Accepted")) == calls.InstallAnswer("Accepted", None)
    answer = read201(result201.InstallCertificate(
        status="Rejected", status_info={"reason_code": "InvalidCertificate", "additional_info": "expired"}))
    assert answer == calls.InstallAnswer("Rejected", "InvalidCertificate expired")


@pytest.mark.parametrize("version", sorted(CALLS))
def test_installed_ids_payload_and_answer_per_version(version: str) -> None:
    request = calls.get_installed_certificate_ids(version)
    assert isinstance(request.payload, CALLS[version].GetInstalledCertificateIds)
    if version == "ocpp1.6":
        assert request.payload.certificate_type == "CentralSystemRootCertificate"
        answer: Any = result16.GetInstalledCertificateIds(
            status="Accepted", certificate_hash_data=[HASH, {"hash_algorithm": "SHA256"}, "junk"])
    else:
        assert request.payload.certificate_type == ["CSMSRootCertificate"]
        answer = RESULTS_2X[version].GetInstalledCertificateIds(status="Accepted", certificate_hash_data_chain=[
            {"certificate_type": "CSMSRootCertificate", "certificate_hash_data": HASH},
            {"certificate_type": "CSMSRootCertificate", "certificate_hash_data": {"serial_number": "1"}}])
    # Malformed entries are left out; the rest are normalized (lowercase hex, no leading zeros).
    assert request.read(answer) == calls.InstalledIds("Accepted", (PARSED,))


@pytest.mark.parametrize("version", sorted(CALLS))
def test_installed_ids_not_found_is_empty(version: str) -> None:
    module = result16 if version == "ocpp1.6" else RESULTS_2X[version]
    request = calls.get_installed_certificate_ids(version)
    assert request.read(module.GetInstalledCertificateIds(status="NotFound")) == calls.InstalledIds("NotFound", ())


def test_configuration_is_a_16_message_and_variables_a_2x_one() -> None:
    request = calls.get_configuration("ocpp1.6", ["A", "B"])
    assert isinstance(request.payload, call16.GetConfiguration) and request.payload.key == ["A", "B"]
    assert request.read(result16.GetConfiguration(configuration_key=[
        {"key": "A", "readonly": True, "value": "1"}, "junk"], unknown_key=["B"])) == {"A": "1"}
    with pytest.raises(ValueError, match="1.6 message"):
        calls.get_configuration("ocpp2.0.1", ["A"])
    with pytest.raises(ValueError, match="2.x message"):
        calls.get_variables("ocpp1.6", [calls.Variable("C", "V")])
    with pytest.raises(ValueError, match="unknown OCPP version"):
        calls.install_certificate("ocpp1.5", "PEM")


@pytest.mark.parametrize("version", sorted(RESULTS_2X))
def test_get_variables_payload_and_answer(version: str) -> None:
    wanted = [calls.Variable("SecurityCtrlr", "CertificateEntries"), calls.Variable("X", "Y", "Target")]
    request = calls.get_variables(version, wanted)
    assert isinstance(request.payload, CALLS[version].GetVariables)
    assert request.payload.get_variable_data == [
        {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "CertificateEntries"}, "attribute_type": "Actual"},
        {"component": {"name": "X"}, "variable": {"name": "Y"}, "attribute_type": "Target"}]
    answer = RESULTS_2X[version].GetVariables(get_variable_result=[
        {"attribute_status": "Accepted", "component": {"name": "SecurityCtrlr"},
         "variable": {"name": "CertificateEntries"}, "attribute_value": "4"},
        {"attribute_status": "Rejected", "component": {"name": "X"}, "variable": {"name": "Y"},
         "attribute_type": "Target"}])
    assert request.read(answer) == {wanted[0]: "4"}


@pytest.mark.parametrize("version", sorted(CALLS))
def test_store_settings_read_the_same_facts_in_every_version(version: str) -> None:
    request = calls.certificate_store_settings(version)
    if version == "ocpp1.6":
        assert isinstance(request.payload, call16.GetConfiguration)
        assert request.action == "GetConfiguration"
        answer: Any = result16.GetConfiguration(configuration_key=[
            {"key": "CertificateStoreMaxLength", "readonly": True, "value": " 5 "},
            {"key": "AdditionalRootCertificateCheck", "readonly": True, "value": "TRUE"}])
        expected = calls.StoreSettings(store_max=5, additional_root_check=True)
    else:
        assert isinstance(request.payload, CALLS[version].GetVariables)
        assert request.action == "GetVariables"
        answer = RESULTS_2X[version].GetVariables(get_variable_result=[
            {"attribute_status": "Accepted", "component": {"name": "SecurityCtrlr"},
             "variable": {"name": "CertificateEntries"}, "attribute_value": "2"},
            {"attribute_status": "Accepted", "component": {"name": "SecurityCtrlr"},
             "variable": {"name": "AdditionalRootCertificateCheck"}, "attribute_value": "false"}])
        expected = calls.StoreSettings(store_used=2, additional_root_check=False)
    assert request.read(answer) == expected


def test_store_settings_not_told_stay_unknown() -> None:
    read16 = calls.certificate_store_settings("ocpp1.6").read
    assert read16(result16.GetConfiguration(configuration_key=[
        {"key": "CertificateStoreMaxLength", "readonly": True, "value": "many"}])) == calls.StoreSettings()
    read201 = calls.certificate_store_settings("ocpp2.0.1").read
    assert read201(result201.GetVariables(get_variable_result=[])) == calls.StoreSettings()


def test_hash_data_round_trip() -> None:
    assert calls.parse_hash_data(calls.hash_data_json(PARSED)) == PARSED
    assert calls.parse_hash_data({"hash_algorithm": "SHA256"}) is None
    assert calls.normalize_serial("0x00AB") == "ab" and calls.normalize_serial("000") == "0"
