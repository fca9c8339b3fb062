"""The charger CA's store work on SQLite and PostgreSQL: the CA sealed in the store, batches of
certificates and delivery answers, revocation and its watermark; and the group commit."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt

import pytest

from certd.chargerca import ca_store, peers, records
from certd.config import Config
from certd.ocpp import charger_registry
from certd.ocpp.group_commit import GroupCommit
from certd.store.db import make_engine, upgrade
from certd.store.types import utcnow
from tests.chargerca.chargers import ORG, new_key

KEK_ENV = "CERTD_TEST_STORE_KEK"


def config(tmp_path) -> Config:  # type: ignore[no-untyped-def]
    return Config.model_validate({"state_dir": str(tmp_path), "ocpp": {"charger_ca": {
        "organization": ORG, "key_storage": "store", "key_encryption_key_env": KEK_ENV,
        "key_type": "ec-p256", "retry_base": 10, "retry_max": 100}}})


def test_certificates_deliveries_and_revocation_on_both_backends(db_url: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEK_ENV, base64.b64encode(b"k" * 32).decode())
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        cfg = config(tmp_path)
        settings = cfg.ocpp.charger_ca
        assert settings is not None
        ca_store.ensure_ca(engine, cfg, utcnow())
        ca = ca_store.load_issuing(engine, cfg)
        for cid in ("A", "B", "C"):
            charger_registry.insert_charger(engine, cid, password_hash=None, heartbeat_class="default")
        now = utcnow()
        from certd.chargerca import authority

        items = [records.ToStore(ca, authority.sign_leaf(ca, new_key("ec").public_key(), cid, ORG, 30, now),
                                 cid, "ec-p256", now, "p2", "ocpp2.0.1", "ab") for cid in ("A", "B", "C", "C")]
        issued = records.store_issued_batch(engine, items)
        states = {(c.charger_id, c.serial): c.state for c in records.certificates(engine)}
        assert list(states.values()) == ["issued", "issued", "superseded", "issued"]  # C's newest wins
        mark = peers.watermark(engine)
        outcomes = ["Accepted", "Rejected", "timeout", "Accepted"]
        after = records.record_deliveries(engine, [records.Delivery(i.cert.serial, o, "why" if o != "Accepted" else None)
                                                   for i, o in zip(issued, outcomes)], settings, now)
        assert after == ["active", "rejected", "superseded", "active"]
        renewals = records.renewals(engine, ["A", "B", "C"])
        assert renewals["B"].attempts == 1 and renewals["B"].next_attempt_at == now + dt.timedelta(seconds=10)
        assert renewals["A"].last_result == "certificate accepted"
        grouped = records.certificates_of(engine, ["A", "B", "C"])
        assert [len(grouped[c]) for c in "ABC"] == [1, 1, 2] and grouped["A"][0].cert_pem == ""
        assert records.current(grouped["C"]).serial == issued[3].cert.serial  # type: ignore[union-attr]

        assert peers.watermark(engine) != mark  # a rejected certificate moved it
        mark = peers.watermark(engine)
        [revoked] = records.revoke(engine, "A", "test", utcnow())
        assert peers.watermark(engine) != mark
        connected = {"A": issued[0].cert.fingerprint, "C": issued[3].cert.fingerprint, "D": None}
        assert peers.refusals(engine, connected) == {"A": "certificate revoked", "D": "charger removed"}
        charger_registry.update_charger(engine, "C", enabled=False)
        assert peers.refusals(engine, connected)["C"] == "charger disabled"
        found = peers.lookup(engine, "A", issued[0].cert.fingerprint)
        assert found.stored is not None and found.stored.state == "revoked" and found.first_use_unrecorded
        assert records.revoked(engine, ca.fingerprint) == [(revoked.serial, revoked.revoked_at)]
    finally:
        engine.dispose()


def test_group_commit_batches_concurrent_writes_and_shares_errors() -> None:
    batches: list[list[int]] = []

    def write(items):  # type: ignore[no-untyped-def]
        batches.append(list(items))
        if -1 in items:
            raise ValueError("the store said no")
        return [item * 10 for item in items]

    async def scenario() -> None:
        commit: GroupCommit[int, int] = GroupCommit(write, asyncio.Lock(), limit=3)
        results = await asyncio.gather(*(commit(n) for n in range(7)))
        assert results == [n * 10 for n in range(7)]
        assert batches == [[0, 1, 2], [3, 4, 5], [6]] and commit.batches == 3
        with pytest.raises(ValueError, match="the store said no"):
            await asyncio.gather(commit(-1), commit(5))
        assert await commit(4) == 40  # the next batch is written as usual

    asyncio.run(scenario())
