"""Issue: one certificate from the ACME CA, top to bottom (flow.py).

keys.py     private keys, CSRs, certificate facts
account.py  the ACME account: made once, kept, recovered
order.py    one order: authorizations, DNS-01 answers (through certd.dns), polling, finalize
chains.py   the preferred chain among the alternates
ari.py      ACME Renewal Information (RFC 9773): the CA's renewal window
flow.py     the issuance flow: key + order + DNS-01 + chain, stored as an IssuedCertificate
"""
