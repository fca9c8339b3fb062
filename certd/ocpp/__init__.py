"""Embedded OCPP endpoint: chargers connect to certd over WSS (1.6J, 2.0.1, 2.1).

service.py     OcppService: listeners + live certificate reload (the daemon's entry point)
server.py      one listener: path -> id, Basic auth, subprotocol choice
connection.py  the WebSocket connection class (bounded, quiet websockets logging)
frames.py      pure pre-parser: size, depth, number length, array shape -> frame or rejection
dispatch.py    the read loop: rejections answered and counted, calls routed to handlers
v16.py v201.py incoming messages (@on handlers), per version
calls.py       outgoing messages, one builder per message, per version
session.py     one connected charger, its call handle
admission.py   who may connect (pure)      auth.py  password hashing, failure limiter
ids.py         charge point ids from paths charger_registry.py  charger rows in the store
logsafe.py     charger-supplied text made safe for one log line
mtls.py        security profile 3: client certificates required, checked, watched (revocations)
enrollment.py  SignCertificate answered, certificates signed and delivered, the 2 -> 3 move
charger_certs.py  the charger CA inside the service: renewal triggers, CA reload, the sweep
group_commit.py   many tasks' store writes in one transaction per batch
(the charger CA's pure decisions and store work: certd.chargerca)
"""
