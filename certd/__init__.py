"""certd: keeps TLS certificates alive for home servers and EV-charger fleets."""

__version__ = "0.1.0"
