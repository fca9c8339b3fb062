"""Trust rollover: chargers get new roots over OCPP before a listener serves a chain ending at them.

- `gates`: pure decisions (hold a new issuance back, what to install, when a gate opens);
- `policy`: pure retry policy (when a charger is due, back-off after failures);
- `gate_store`: gated listeners, known certificates, charger views, `certd fleet status`;
- `evaluate`: every gate decided against the store (worker thread);
- `charger_store`: a charger's row read before and written after an attempt (worker thread);
- `attempt`: one provisioning conversation with one charger (event loop);
- `provision` / `hashdata`: requests and their classified replies / CertID hash data;
- `alerts`: the forced-switch alert; `plans`: frozen values passed between loop and threads;
- `loop_owned`: containers only the event loop may change;
- `engine`: `RolloverEngine`, which runs it all from the OCPP service's loop.
"""
