"""ACME (RFC 8555) on top of the `acme` library: account, order, chains."""
