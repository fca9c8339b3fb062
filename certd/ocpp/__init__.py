"""Embedded OCPP endpoint: chargers connect to certd over WSS (1.6J, 2.0.1, 2.1).

service.py  OcppService: listeners + live certificate reload (the daemon's entry point)
server.py   one listener: path -> id, Basic auth, subprotocol choice, read loop
admission.py  who may connect (pure)     auth.py  password hashing, failure limiter
ids.py      charge point ids from paths   material.py  which certificate a listener serves
registry.py charger rows in the store      session.py  one connected charger, its call handle
v16.py v201.py  per-version message handlers
"""
