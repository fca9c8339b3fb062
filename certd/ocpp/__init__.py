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
"""
