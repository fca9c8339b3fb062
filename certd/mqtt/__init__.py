"""MQTT: certd's state in Home Assistant, and fleet bundle pushes over a broker.

One broker connection per daemon (`client`: reconnect with backoff, birth and will,
subscriptions), started by `service` next to the renewals. On it:
`homeassistant` (pure: discovery configs and states from a `snapshot` of the store),
`publisher` (sends only what changed, removes what left the config), `push` (the
`kind = "mqtt"` registry target of the outbox), `acks` (device acknowledgements into
the store, bounded memory) and `devices` (current / behind / silent, for
`certd fleet devices`). `names` builds ids and topics.
"""
