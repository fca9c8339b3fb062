"""The push target seam: a registry kind added in-process gets the outbox's queue, backoff and records.

The fake kind below is what a new kind (e.g. mqtt) would be: one config model, one target,
one line in REGISTRY_KINDS. No HTTP is involved.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal

import pytest
from sqlmodel import select

from certd.config.trust import REGISTRY_KINDS, HttpRegistryConfig, RegistryConfig, RegistryKind, SecretSource
from certd.errors import ConfigError
from certd.store.db import session_scope
from certd.store.trust import TrustDelivery, TrustDeliveryAttempt
from certd.trust import outbox
from certd.trust.push import PushMessage, PushOutcome
from certd.trust.track import on_issued
from tests import pki
from tests.trust.conftest import bundle_toml

# What each fake inbox answers, in order (then "accepted"), and what it received.
SCRIPTS: dict[str, list[PushOutcome]] = {}
RECEIVED: dict[str, list[PushMessage]] = {}


class FakeRegistryConfig(RegistryConfig):
    kind: Literal["fake"] = "fake"
    inbox: str
    token_env: str | None = None

    def secret_sources(self) -> tuple[SecretSource, ...]:
        return (SecretSource(self.token_env, None, f"token of registry {self.name}"),) if self.token_env else ()


class FakeTarget:
    def __init__(self, registry: FakeRegistryConfig) -> None:
        self.inbox = registry.inbox

    def deliver(self, message: PushMessage) -> PushOutcome:
        RECEIVED.setdefault(self.inbox, []).append(message)
        script = SCRIPTS.get(self.inbox, [])
        return script.pop(0) if script else PushOutcome("accepted", None, "stored")


@pytest.fixture
def fake_kind(monkeypatch):
    monkeypatch.setitem(REGISTRY_KINDS, "fake", RegistryKind(FakeRegistryConfig, f"{__name__}:FakeTarget"))
    SCRIPTS.clear()
    RECEIVED.clear()
    yield
    SCRIPTS.clear()
    RECEIVED.clear()


def fake_registry(name: str = "fake-reg", inbox: str = "a", extra: str = "") -> str:
    return f'[[trust.registries]]\nname = "{name}"\nkind = "fake"\ninbox = "{inbox}"\n{extra}'


def issue_one(world, config, *, deliver: bool = False):  # type: ignore[no-untyped-def]
    root = pki.root("Push Root")
    inter = pki.intermediate("Push Inter", root)
    world.trust_anchor(root)
    issued = world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter])
    return on_issued(config, world.engine, issued, deliver=deliver)


def test_outbox_delivers_to_a_registered_kind_with_backoff_and_rejection(world, fake_kind) -> None:
    config = world.config(bundle_toml(world.anchors_dir, extra='flavours = ["full"]',
                                      registries=fake_registry()))
    assert type(config.trust.registries[0]) is FakeRegistryConfig
    issue_one(world, config)
    SCRIPTS["a"] = [PushOutcome("retry", None, "broker busy", retry_after=600),
                    PushOutcome("retry", None, "broker away"),
                    PushOutcome("rejected", 4, "topic not allowed")]
    now = dt.datetime.now(dt.timezone.utc)

    (first,) = outbox.deliver(config, world.engine, now=now)
    assert (first.outcome, first.detail) == ("retry", "broker busy")
    assert first.next_attempt_at == now + dt.timedelta(seconds=600)  # the target's hint beats 30 s
    assert outbox.deliver(config, world.engine, now=now + dt.timedelta(seconds=599)) == []
    (second,) = outbox.deliver(config, world.engine, now=now + dt.timedelta(seconds=600))
    assert second.outcome == "retry"
    assert second.next_attempt_at == now + dt.timedelta(seconds=600 + 120)  # second attempt: 2 min
    (third,) = outbox.deliver(config, world.engine, now=now + dt.timedelta(seconds=720))
    assert (third.outcome, third.status) == ("rejected", 4) and "topic not allowed" in third.line()
    assert outbox.deliver(config, world.engine, now=now + dt.timedelta(days=30)) == []  # rejected stays
    (forced,) = outbox.deliver(config, world.engine, now=now + dt.timedelta(days=30), force=True)
    assert forced.outcome == "accepted"
    assert outbox.deliver(config, world.engine, now=now + dt.timedelta(days=31), force=True) == []

    messages = RECEIVED["a"]
    assert len(messages) == 4 and len({(m.idempotency_key, m.body) for m in messages}) == 1
    doc = json.loads(messages[0].body)
    assert (doc["bundle"], doc["flavour"], doc["version"]) == ("fleet", "full", 1)
    assert doc["idempotency_key"] == messages[0].idempotency_key and messages[0].registry == "fake-reg"
    with session_scope(world.engine) as session:
        (delivery,) = session.exec(select(TrustDelivery)).all()
        assert (delivery.state, delivery.attempts, delivery.registry_name) == ("delivered", 4, "fake-reg")
        attempts = session.exec(select(TrustDeliveryAttempt).order_by(TrustDeliveryAttempt.id)).all()
        assert [(a.outcome, a.status_code, a.detail) for a in attempts] == [
            ("retry", None, "broker busy"), ("retry", None, "broker away"),
            ("rejected", 4, "topic not allowed"), ("accepted", None, "stored")]


def test_a_kind_beside_http_gets_its_own_deliveries_right_after_issuance(world, fake_kind) -> None:
    config = world.config(bundle_toml(world.anchors_dir, extra='flavours = ["roots", "full"]',
                                      registries=fake_registry("one", "a") + fake_registry("two", "b")))
    SCRIPTS["b"] = [PushOutcome("unheard-of", None, "?")]
    result = issue_one(world, config, deliver=True)
    outcomes = sorted((r.registry, r.outcome) for r in result.deliveries)
    assert outcomes == [("one", "accepted"), ("one", "accepted"), ("two", "accepted"), ("two", "retry")]
    odd = next(r for r in result.deliveries if r.outcome == "retry")
    assert "'unheard-of', not accepted/retry/rejected" in odd.detail  # an unknown answer is a retry
    assert sorted(json.loads(m.body)["flavour"] for m in RECEIVED["a"]) == ["full", "roots"]


def test_registry_kind_config(world, fake_kind) -> None:
    plain = world.config(bundle_toml(world.anchors_dir, registries=(
        '[[trust.registries]]\nname = "r"\nurl = "https://reg.example"\nhmac_secret_env = "HMAC_ENV"\n')))
    explicit = world.config(bundle_toml(world.anchors_dir, registries=(
        '[[trust.registries]]\nname = "r"\nkind = "http"\nurl = "https://reg.example"\n'
        'hmac_secret_env = "HMAC_ENV"\n')))
    assert type(plain.trust.registries[0]) is HttpRegistryConfig
    assert plain.trust.registries[0] == explicit.trust.registries[0]  # kind defaults to http

    # (The example kind was "mqtt" until kind = "mqtt" existed; any kind not in the table will do.)
    with pytest.raises(ConfigError, match=r"trust\.registries\[0\]\.kind: unknown registry kind 'smtp' "
                                          r"\(known: http, mqtt, fake\)"):
        world.config(bundle_toml(world.anchors_dir, registries='[[trust.registries]]\nname = "m"\nkind = "smtp"\n'))
    with pytest.raises(ConfigError, match=r"trust\.registries\[0\]\.inbox: Field required"):
        world.config(bundle_toml(world.anchors_dir, registries='[[trust.registries]]\nname = "f"\nkind = "fake"\n'))
    with pytest.raises(ConfigError, match=r"trust\.registries\[0\]\.url: unknown key"):
        world.config(bundle_toml(world.anchors_dir, registries=fake_registry(extra='url = "https://x"\n')))

    mixed = world.config(bundle_toml(world.anchors_dir, registries=(
        fake_registry(extra='token_env = "FAKE_TOKEN"\n') +
        '[[trust.registries]]\nname = "h"\nurl = "https://reg.example"\nhmac_secret_env = "HMAC_ENV"\n')))
    assert {"FAKE_TOKEN", "HMAC_ENV"} <= set(mixed.secret_env_names())  # hooks never see either
