"""certd as the chargers' certificate authority (OCPP security profile 3).

Pure decisions (no I/O, exhaustive tests):
csr.py       whether a CSR is signed: signature, key, subject vs the charger, standing
identity.py  whether a client certificate admits a charger to a profile-3 listener
timing.py    when a certificate is renewed (2/3 of its life, CA replaced) and alerted (last tenth)
plan.py      what to do next with one connected charger: deliver, move 2 -> 3, trigger

Around them:
authority.py CA certificates, charger certificates, CRLs (crypto only)
keystore.py  the CA key: an owner-only file, or AES-GCM in the store under the store key (or a KEK of its own)
rekey.py     the CA keys' part of `certd db rotate-key` / `encrypt` (same transaction as the others)
ca_store.py  the CA in the store: create / import once, load for signing, trusted set
records.py   charger certificates, CSR requests, deliveries, revocations, renewal state
peers.py     profile-3 lookups, first use, the revocation watch's store side
sweep.py     the daemon's periodic job: last-tenth alerts, CRL file

The OCPP side (handlers, sending CertificateSigned / TriggerMessage, closing revoked
connections) lives in certd.ocpp: charger_certs.py, enrollment.py, mtls.py.
"""
