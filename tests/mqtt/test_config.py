"""The `[mqtt]`, `[homeassistant]` sections and `kind = "mqtt"` registries: what is accepted, what
is refused and how the error reads."""

from __future__ import annotations

import pytest

from certd.config import parse_config
from certd.config.trust import MqttRegistryConfig
from certd.errors import ConfigError
from certd.mqtt import names
from certd.mqtt.client import client_options, reconnect_delay

BUNDLE = '[[trust.bundles]]\nname = "fleet"\n'
REGISTRY = '[[trust.registries]]\nname = "hub"\nkind = "mqtt"\nhmac_secret_env = "HUB_HMAC"\n'


def test_defaults_and_a_full_section() -> None:
    config = parse_config('[mqtt]\nhost = "broker.lan"\nnode_name = "nas"\n')
    assert config.mqtt.active and config.mqtt.broker_port == 1883 and config.mqtt.protocol == "3.1.1"
    assert not config.homeassistant.enabled
    config = parse_config('[mqtt]\nhost = "broker.lan"\ntls = true\nusername = "certd"\npassword_file = "/p"\n'
                          'protocol = "5"\nclient_id = "certd-nas"\nkeepalive = 30\n'
                          '[homeassistant]\nenabled = true\ndiscovery_prefix = "ha"\n'
                          + BUNDLE + REGISTRY + 'signature = "user_property"\ntopic_prefix = "acme/fleet"\n')
    assert config.mqtt.broker_port == 8883 and config.mqtt.broker() == "broker.lan:8883 (TLS)"
    assert config.homeassistant.birth_topic == "ha/status"
    registry = config.trust.registries[0]
    assert isinstance(registry, MqttRegistryConfig) and registry.broker == config.mqtt  # attached for deliveries
    assert "HUB_HMAC" in config.secret_env_names()
    assert "MQTT_PW" in parse_config('[mqtt]\nhost = "b"\nusername = "u"\npassword_env = "MQTT_PW"\n').secret_env_names()
    assert config.mqtt.files() == {"password_file": "/p"}


@pytest.mark.parametrize(("text", "message"), [
    ('[homeassistant]\nenabled = true\n', "homeassistant.enabled needs a broker"),
    (BUNDLE + REGISTRY, "registry 'hub' (kind = \"mqtt\") needs a broker"),
    ('[mqtt]\nhost = "b"\n' + BUNDLE + REGISTRY + 'signature = "user_property"\n',
     'signature = "user_property" needs [mqtt] protocol = "5"'),
    ('[mqtt]\nhost = "b"\npassword_env = "X"\n', "a password needs a username"),
    ('[mqtt]\nhost = "b"\nusername = "u"\npassword_env = "X"\npassword_file = "/f"\n',
     "set password_env or password_file, not both"),
    ('[mqtt]\nhost = "b"\nca_file = "/ca.pem"\n', "need tls = true"),
    ('[mqtt]\nhost = "b"\ntls = true\nclient_key = "/k"\n', "client_key needs client_cert"),
    ('[mqtt]\nhost = "b"\nbase_topic = "certd/#"\n', "base_topic 'certd/#'"),
    ('[mqtt]\nhost = "b"\nclient_id = "has space"\n', "client_id"),
    ('[mqtt]\nhost = "b"\nprotocol = "3.1"\n', "mqtt.protocol"),
    ('[mqtt]\nhost = "b"\n' + BUNDLE + '[[trust.registries]]\nname = "hub"\nkind = "mqtt"\n',
     "needs hmac_secret_env or hmac_secret_file"),
    ('[mqtt]\nhost = "b"\n' + BUNDLE + REGISTRY + 'topic_prefix = "/fleet/"\n', "topic_prefix"),
    ('[mqtt]\nhost = "b"\nbroker = "x"\n', "mqtt.broker: unknown key"),
])
def test_errors_name_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert message in str(raised.value)


def test_mqtt_off_without_host_or_when_disabled() -> None:
    assert not parse_config("").mqtt.active
    assert not parse_config('[mqtt]\nenabled = false\nhost = "b"\n').mqtt.active


def test_client_options_per_protocol() -> None:
    v3 = parse_config('[mqtt]\nhost = "b"\nnode_name = "nas.lan"\n').mqtt
    options = client_options(v3, "nas.lan")
    assert options["identifier"] == names.default_client_id("nas.lan") and options["identifier"].startswith("certd-nas_lan_")
    assert options["clean_session"] is False and "properties" not in options  # persistent: acks wait for certd
    assert (options["will"].topic, options["will"].payload, options["will"].retain) == (
        names.availability_topic("certd", "nas.lan"), "offline", True)
    v5 = parse_config('[mqtt]\nhost = "b"\nprotocol = "5"\nsession_expiry = 3600\n').mqtt
    options = client_options(v5, "nas")
    assert options["clean_start"] is False and options["properties"].SessionExpiryInterval == 3600
    assert "clean_session" not in options
    no_session = parse_config('[mqtt]\nhost = "b"\nsession_expiry = 0\n').mqtt
    assert client_options(no_session, "nas")["clean_session"] is True


def test_backoff_and_ids() -> None:
    assert [reconnect_delay(n, 60) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert reconnect_delay(10_000, 60) == 60
    assert names.slug("web") == "web" and names.slug("web.example") != names.slug("web_example")
    assert names.parse_ack_topic("fleet", "fleet/acks/b/dev-1") == ("b", "dev-1")
    assert names.parse_ack_topic("fleet", "fleet/acks/b/dev/extra") is None
    assert names.parse_ack_topic("fleet", "other/acks/b/dev") is None
