"""The `[ocpp.charger_ca]` section: certd as the certificate authority of its chargers.

Under OCPP security profile 3 a charger authenticates with a client certificate.
certd signs the charger's CSR (SignCertificate), hands back the chain
(CertificateSigned), asks for a new CSR when a certificate reaches two thirds of
its life, and verifies the certificates on `security_profile = 3` listeners.

```toml
[ocpp.charger_ca]
organization = "Example Charging GmbH"   # O of the CA and of every charger certificate
key_storage = "store"                    # CA key encrypted in the store under the store key
```
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from certd.config._base import Section

CaKeyType = Literal["rsa2048", "rsa3072", "ec-p256", "ec-p384"]
OcppInterface = Literal["Wired0", "Wired1", "Wired2", "Wired3",
                        "Wireless0", "Wireless1", "Wireless2", "Wireless3"]

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_CONFIG_KEY_16 = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")


class ProfileMoveConfig(Section):
    """Where a charger that got its certificate over a profile-2 listener goes next.

    2.0.1: SetNetworkProfile (this URL, security profile 3) into `configuration_slot`, then that
    slot first in OCPPCommCtrlr.NetworkConfigurationPriority; the charger switches at its next
    reconnect. 1.6: ChangeConfiguration `url_key_16` (vendor key, when set) to this URL + id,
    then SecurityProfile = 3, after which the charger reconnects (security whitepaper).
    """

    # The profile-3 listener as chargers reach it, without the charger id ("wss://host:port/ocpp/").
    url: str
    configuration_slot: Annotated[int, Field(ge=0, le=9)] = 1
    ocpp_interface: OcppInterface = "Wireless0"
    message_timeout: Annotated[int, Field(ge=1, le=600)] = 30
    # OCPP 1.6 has no standard key for the central system URL; name your charger's vendor key.
    url_key_16: str | None = None

    @field_validator("url")
    @classmethod
    def _wss_url(cls, value: str) -> str:
        if not value.startswith("wss://") or len(value) > 400:
            raise ValueError("a profile-3 URL starts with wss:// (at most 400 characters)")
        return value if value.endswith("/") else value + "/"

    @field_validator("url_key_16")
    @classmethod
    def _key_name(cls, value: str | None) -> str | None:
        if value is not None and not _CONFIG_KEY_16.match(value):
            raise ValueError(f"{value!r} is not an OCPP 1.6 configuration key name")
        return value


class ChargerCaConfig(Section):
    # The operator's (CPO/CSO) name: O of the CA and of every charger certificate; a CSR must carry
    # it in its O (OCPP A00.FR.404 / A00.FR.509). 1.6 chargers take it from CpoName, 2.0.1 ones
    # from SecurityCtrlr.OrganizationName.
    organization: Annotated[str, Field(min_length=1, max_length=64)]
    # Subject CN of a CA certd generates.
    common_name: Annotated[str, Field(min_length=1, max_length=64)] = "certd charger CA"
    # Key of a CA certd generates: RSA for fleets of cellular modules (their TLS stacks all
    # speak RSA), ECDSA P-256 when every charger handles it.
    key_type: CaKeyType = "rsa2048"
    ca_validity_days: Annotated[int, Field(ge=30, le=36500)] = 3650
    # Validity of a charger certificate (fractions allowed: tests use seconds).
    leaf_validity_days: Annotated[float, Field(gt=0, le=3650)] = 730
    # Where the CA key lives: "file" (PEM, owner-only, in key_dir as ca-<fingerprint>.key) or
    # "store" (AES-256-GCM encrypted in the store: under the store key, [store] key_file /
    # key_env, rotated with it by `certd db rotate-key`; or, when one is set, under a 32-byte key
    # of its own from key_encryption_key_env / key_encryption_key_file).
    key_storage: Literal["file", "store"] = "file"
    key_dir: str | None = None  # default: <state_dir>/charger-ca
    key_encryption_key_env: str | None = None
    key_encryption_key_file: str | None = None
    # Import an existing CA on first start instead of generating one (PEM files; the key file
    # owner-only). `import_chain_file`: its issuers up to the (offline) root.
    import_cert_file: str | None = None
    import_key_file: str | None = None
    import_chain_file: str | None = None
    # Ask every connected charger without a certificate for a CSR (else: `certd chargers
    # renew-cert ID`, or the charger asks on its own).
    auto_enroll: bool = False
    # Once a charger connected with its certificate, its password stops working on profile-2
    # listeners (`certd chargers set-password` brings it back).
    retire_password: bool = True
    # Seconds between looks at connected chargers: certificates due, deliveries to retry.
    check_interval: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Seconds between looks at the store for revoked certificates and disabled/removed chargers:
    # how long a revocation by another process (`certd chargers revoke-cert`) takes to close a
    # live profile-3 connection.
    revocation_check_interval: Annotated[float, Field(gt=0, le=600)] = 5.0
    # Seconds between sweeps over all charger certificates, connected or not (last-tenth alerts, CRL).
    sweep_interval: Annotated[float, Field(gt=0, le=86400)] = 3600.0
    # Back-off after a failed request to a charger: retry_base, doubled each time, at most retry_max.
    retry_base: Annotated[float, Field(gt=0)] = 60.0
    retry_max: Annotated[float, Field(gt=0)] = 6 * 3600.0
    # A CRL of the revoked charger certificates, rewritten by the sweep and by revoke-cert.
    crl_file: str | None = None
    move: ProfileMoveConfig | None = None

    @field_validator("key_encryption_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ChargerCaConfig":
        kek_sources = [v for v in (self.key_encryption_key_env, self.key_encryption_key_file) if v]
        if len(kek_sources) > 1:
            raise ValueError("key_encryption_key_env and key_encryption_key_file: set one, not both")
        if self.key_storage == "file" and kek_sources:
            raise ValueError("key_encryption_key_* apply to key_storage = \"store\" only")
        if self.key_storage == "store" and self.key_dir:
            raise ValueError("key_dir applies to key_storage = \"file\" only")
        if bool(self.import_cert_file) != bool(self.import_key_file):
            raise ValueError("import_cert_file and import_key_file go together")
        if self.import_chain_file and not self.import_cert_file:
            raise ValueError("import_chain_file needs import_cert_file and import_key_file")
        if self.retry_max < self.retry_base:
            raise ValueError("retry_max must not be below retry_base")
        return self

    def secret_env_names(self) -> tuple[str, ...]:
        return (self.key_encryption_key_env,) if self.key_encryption_key_env else ()
