"""Pick the chain to serve among those the CA offered.

Let's Encrypt rotates intermediates per issuance on purpose: never pin one;
take what each issuance offers, and let the user prefer an issuer by name.
"""

from __future__ import annotations

from cryptography import x509

from certd.issue.keys import common_name, split_pem_chain


def chain_issuer_names(fullchain_pem: str) -> list[str]:
    """Issuer CNs along the chain, leaf's issuer first, top of the chain last."""
    certs = [x509.load_pem_x509_certificate(p.encode()) for p in split_pem_chain(fullchain_pem)]
    return [common_name(c.issuer) for c in certs]


def select_chain(fullchains: list[str], preferred_issuer: str | None) -> str:
    """The first chain whose top-most issuer CN equals `preferred_issuer` (as certbot/lego do),
    else the first chain with that issuer anywhere, else the CA's default (the first)."""
    if not fullchains:
        raise ValueError("the CA returned no certificate chain")
    if not preferred_issuer:
        return fullchains[0]
    wanted = preferred_issuer.strip().lower()
    issuers = [[n.lower() for n in chain_issuer_names(c)] for c in fullchains]
    for chain, names in zip(fullchains, issuers):
        if names and names[-1] == wanted:
            return chain
    for chain, names in zip(fullchains, issuers):
        if wanted in names:
            return chain
    return fullchains[0]
