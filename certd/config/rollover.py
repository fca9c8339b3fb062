"""The `[rollover]` section: install new CA roots on chargers over OCPP before serving them.

```toml
[rollover]
gate_share = 1.0        # share of a listener's registered chargers that must confirm the new roots
deadline_days = 7       # ... or switch anyway when the previous certificate has this many days left
[[rollover.listeners]]  # per-listener overrides (by listener name or host:port label)
listener = "wallbox"
gate_share = 0.9
```
A listener is gated when it serves certificates from `[[certificates]]` and a
`[[trust.bundles]]` entry covers them (the bundle says which roots chargers need).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from certd.config._base import Section

Flavour = Literal["roots", "full"]

Share = Annotated[float, Field(ge=0.0, le=1.0)]
Days = Annotated[float, Field(ge=0.0, le=365.0)]


class ListenerRolloverConfig(Section):
    """Overrides for one OCPP listener; unset values come from `[rollover]`."""

    listener: str  # the listener's `name`, or its label "host:port" when it has none
    enabled: bool | None = None
    gate_share: Share | None = None
    deadline_days: Days | None = None
    # The bundle whose roots this listener's chargers must hold (default: the one covering its
    # certificates; required when several bundles cover them).
    bundle: str | None = None


class RolloverConfig(Section):
    # Off: listeners serve each new certificate at once and certd installs nothing on chargers.
    enabled: bool = True
    # Share (0..1) of a listener's registered, enabled chargers that must have confirmed the new
    # roots (GetInstalledCertificateIds) before the listener serves a certificate needing them.
    gate_share: Share = 1.0
    # Switch anyway, with an alert naming the chargers still lacking the roots, once the
    # previously served certificate has fewer than this many days left.
    deadline_days: Days = 7.0
    # Which bundle flavour is installed: "roots" (anchors only; what OCPP's
    # CSMSRootCertificate / CentralSystemRootCertificate means) or "full" (plus intermediates).
    flavour: Flavour = "roots"
    # Chargers provisioned at the same time (each gets one request at a time).
    concurrency: Annotated[int, Field(ge=1, le=2000)] = 100
    # Seconds to wait for a charger's answer to one request.
    call_timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    # After a charger connects, wait this long for its BootNotification before sending requests.
    boot_wait: Annotated[float, Field(ge=0, le=300)] = 5.0
    # Seconds between looks at the store (certificates issued by another process, deadlines,
    # chargers due for a retry).
    check_interval: Annotated[float, Field(gt=0, le=86400)] = 60.0
    # A charger that rejected or failed an install is tried again after this many seconds
    # (or at its next BootNotification, whichever comes first).
    retry_after: Annotated[float, Field(ge=10, le=30 * 86400)] = 3600.0
    listeners: Annotated[list[ListenerRolloverConfig], Field(max_length=16)] = []

    @model_validator(mode="after")
    def _unique_listeners(self) -> "RolloverConfig":
        names = [entry.listener for entry in self.listeners]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"listeners: {', '.join(duplicates)} listed twice")
        return self

    def for_listener(self, label: str) -> "EffectiveRollover":
        """The settings one listener runs with (overrides merged over the defaults)."""
        entry = next((e for e in self.listeners if e.listener == label), None)

        def pick(value: object, default: object) -> object:
            return default if value is None else value

        return EffectiveRollover(
            enabled=bool(pick(entry.enabled if entry else None, self.enabled)),
            gate_share=float(pick(entry.gate_share if entry else None, self.gate_share)),  # type: ignore[arg-type]
            deadline_days=float(pick(entry.deadline_days if entry else None, self.deadline_days)),  # type: ignore[arg-type]
            bundle=entry.bundle if entry else None,
        )


class EffectiveRollover(Section):
    enabled: bool
    gate_share: float
    deadline_days: float
    bundle: str | None


def rollover_config_errors(rollover: RolloverConfig, listener_labels: list[str],
                           bundle_names: list[str]) -> list[str]:
    """Key paths + problems for overrides naming unknown listeners or bundles."""
    errors = []
    for index, entry in enumerate(rollover.listeners):
        if entry.listener not in listener_labels:
            errors.append(
                f"rollover.listeners[{index}].listener: no OCPP listener named {entry.listener!r} "
                f"(known: {', '.join(listener_labels) or 'none'})")
        if entry.bundle is not None and entry.bundle not in bundle_names:
            errors.append(
                f"rollover.listeners[{index}].bundle: no [[trust.bundles]] entry named "
                f"{entry.bundle!r} (known: {', '.join(bundle_names) or 'none'})")
    return errors
