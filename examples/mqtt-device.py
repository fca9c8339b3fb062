#!/usr/bin/env python3
"""Device side of certd's MQTT push target: install each new CA bundle version, then acknowledge it.

    export BUNDLE_HMAC_SECRET=...          # the registry's hmac_secret (same value as certd's)
    export MQTT_PASSWORD=...
    python3 mqtt-device.py --host broker.example.com --port 8883 --ca-file /etc/ssl/broker-ca.pem \
        --username device-0042 --device-id device-0042 --prefix certd/fleet --bundle chargers \
        --flavour full --install /etc/ocpp/ca-bundle.pem [--reload 'systemctl reload ocpp-client']

For each retained message on <prefix>/bundles/<bundle>/<flavour> it
1. checks the HMAC-SHA256 signature over the exact body (envelope `signature`, or the
   MQTT 5 user property `signature`) and refuses anything unsigned or altered;
2. checks that sha256(pem) is the document's sha256 and that the version is newer than
   the one installed (a repeat of the same version is acknowledged again, nothing more);
3. writes the PEM next to --install and renames it over (atomic: never half a bundle);
4. runs --reload, if given;
5. publishes {"version": N, "sha256": "...", "flavour": "..."} retained, QoS 1, on
   <prefix>/acks/<bundle>/<device-id>: `certd fleet devices` then counts it as current.
Needs paho-mqtt 2 (pip install paho-mqtt). --once exits after the first install (tests).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import ssl
import subprocess
import sys
import tempfile

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def body_and_signature(message: mqtt.MQTTMessage) -> tuple[bytes, str | None]:
    """The signed body and its signature, from an envelope or MQTT 5 user properties."""
    properties = getattr(message, "properties", None)
    user = dict(getattr(properties, "UserProperty", []) or []) if properties is not None else {}
    if "signature" in user:
        return message.payload, user["signature"]
    envelope = json.loads(message.payload)
    return envelope["body"].encode("utf-8"), envelope.get("signature")


def verified(body: bytes, signature: str | None, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return signature is not None and hmac.compare_digest(expected, signature)


def installed_version(path: str) -> int:
    try:
        with open(path + ".version", encoding="ascii") as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def install(path: str, pem: str, version: int) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    for target, text in ((path, pem), (path + ".version", f"{version}\n")):
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".bundle-")
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--ca-file", help="CA of the broker's TLS certificate (turns TLS on)")
    parser.add_argument("--username")
    parser.add_argument("--password-env", default="MQTT_PASSWORD")
    parser.add_argument("--secret-env", default="BUNDLE_HMAC_SECRET")
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--prefix", default="certd/fleet")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--flavour", default="full", choices=("roots", "full"))
    parser.add_argument("--install", required=True, help="where the PEM bundle goes")
    parser.add_argument("--reload", help="shell command run after a new bundle is in place")
    parser.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1",
                        help="5 when certd signs with a user property (signature = \"user_property\")")
    parser.add_argument("--once", action="store_true", help="exit after the first install")
    args = parser.parse_args()
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        print(f"set {args.secret_env} to the registry's HMAC secret", file=sys.stderr)
        return 2

    topic = f"{args.prefix}/bundles/{args.bundle}/{args.flavour}"
    ack_topic = f"{args.prefix}/acks/{args.bundle}/{args.device_id}"
    if args.protocol == "5":  # a persistent session: messages published while away wait at the broker
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bundle-{args.device_id}",
                             protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bundle-{args.device_id}",
                             clean_session=False)
    if args.username:
        client.username_pw_set(args.username, os.environ.get(args.password_env))
    if args.ca_file:
        client.tls_set(ca_certs=args.ca_file, cert_reqs=ssl.CERT_REQUIRED)

    def on_connect(client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            print(f"broker refused the connection: {reason_code}", file=sys.stderr)
            return
        client.subscribe(topic, qos=1)

    def on_message(client, userdata, message):  # type: ignore[no-untyped-def]
        try:
            body, signature = body_and_signature(message)
        except (ValueError, KeyError):
            print("ignored: not a certd bundle message", file=sys.stderr)
            return
        if not verified(body, signature, secret):
            print("ignored: bad or missing signature", file=sys.stderr)
            return
        document = json.loads(body)
        pem, version, sha256 = document["pem"], int(document["version"]), document["sha256"]
        if hashlib.sha256(pem.encode("ascii")).hexdigest() != sha256:
            print(f"ignored: version {version} does not match its sha256", file=sys.stderr)
            return
        if version > installed_version(args.install):
            install(args.install, pem, version)
            if args.reload:
                subprocess.run(args.reload, shell=True, check=False)
            print(f"installed {args.bundle} {args.flavour} version {version}")
        elif version < installed_version(args.install):
            return  # an older message: keep what is installed, do not acknowledge backwards
        ack = json.dumps({"version": version, "sha256": sha256, "flavour": document["flavour"]})
        # Not waited for here: the PUBACK arrives through this same network loop (on_publish).
        acks_sent.add(client.publish(ack_topic, ack, qos=1, retain=True).mid)

    def on_publish(client, userdata, mid, reason_code, properties):  # type: ignore[no-untyped-def]
        if mid in acks_sent and args.once:
            client.disconnect()

    acks_sent: set[int] = set()
    client.on_connect = on_connect
    client.on_message = on_message
    client.on_publish = on_publish
    if args.protocol == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        connect_properties = Properties(PacketTypes.CONNECT)
        connect_properties.SessionExpiryInterval = 7 * 86400
        client.connect(args.host, args.port, keepalive=60, clean_start=False, properties=connect_properties)
    else:
        client.connect(args.host, args.port, keepalive=60)
    client.loop_forever(retry_first_connection=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
