"""certd.renewal.ari: how one ARI answer (or a failed fetch) changes the stored state; pure, no I/O."""

from __future__ import annotations

import datetime as dt

from certd.issue.ari import AriError, AriWindow, RenewalInfo
from certd.renewal.ari import AriState, updated_ari_state
from certd.store.renewal import RenewalState

T0 = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
FLOOR = 12 * HOUR  # [daemon] ari_min_interval
WINDOW = AriWindow(T0 + 40 * DAY, T0 + 42 * DAY)


def answered(window: AriWindow = WINDOW, retry_after: dt.datetime | None = None) -> RenewalInfo:
    return RenewalInfo(window, retry_after)


def held(cert_id: str = "a.1", pick: dt.datetime = T0 + 41 * DAY) -> AriState:
    """The state after an earlier answer for `cert_id` with WINDOW, `pick` chosen inside it."""
    return AriState(cert_id=cert_id, supported=True, window_start=WINDOW.start, window_end=WINDOW.end,
                    renew_at=pick, next_check_at=T0)


def test_a_first_answer_picks_a_time_inside_the_window() -> None:
    update = updated_ari_state(AriState(), "a.1", answered(), T0, fraction=0.25, min_interval=FLOOR)
    assert update.state == AriState(cert_id="a.1", supported=True, window_start=WINDOW.start,
                                    window_end=WINDOW.end, renew_at=WINDOW.start + 12 * HOUR,
                                    next_check_at=T0 + FLOOR)  # no Retry-After: 6 h, raised to the floor
    assert update.renewal_time == WINDOW.start + 12 * HOUR and update.new_pick


def test_the_pick_is_kept_while_the_window_stays() -> None:
    update = updated_ari_state(held(), "a.1", answered(), T0 + HOUR, fraction=0.9, min_interval=FLOOR)
    assert update.state.renew_at == T0 + 41 * DAY  # not re-drawn with 0.9
    assert update.renewal_time == T0 + 41 * DAY and not update.new_pick
    assert update.state.next_check_at == T0 + HOUR + FLOOR and update.state.error is None


def test_a_moved_window_gets_a_new_pick() -> None:
    moved = AriWindow(T0 + 2 * DAY, T0 + 4 * DAY)  # e.g. the CA is about to revoke
    update = updated_ari_state(held(), "a.1", answered(moved), T0, fraction=0.5, min_interval=FLOOR)
    assert (update.state.window_start, update.state.window_end) == (moved.start, moved.end)
    assert update.renewal_time == T0 + 3 * DAY and update.new_pick


def test_a_new_certificate_does_not_inherit_the_old_pick() -> None:
    update = updated_ari_state(held("a.1"), "a.2", answered(), T0, fraction=0.0, min_interval=FLOOR)
    assert update.state.cert_id == "a.2"
    assert update.renewal_time == WINDOW.start and update.new_pick  # drawn again, same window


def test_retry_after_sets_the_next_question_within_its_bounds() -> None:
    def next_check(retry_after: dt.timedelta) -> dt.datetime | None:
        info = answered(retry_after=T0 + retry_after)
        return updated_ari_state(held(), "a.1", info, T0, fraction=0.5, min_interval=FLOOR).state.next_check_at

    assert next_check(18 * HOUR) == T0 + 18 * HOUR  # followed
    assert next_check(HOUR) == T0 + FLOOR           # never sooner than the configured floor
    assert next_check(5 * DAY) == T0 + DAY          # never later than a day (RFC 9773 4.3.2)


def test_a_failed_fetch_keeps_the_known_window_and_asks_again_in_six_hours() -> None:
    before = held()
    update = updated_ari_state(before, "a.1", AriError("renewalInfo answered HTTP 503"), T0,
                               fraction=0.9, min_interval=HOUR)
    assert update.state.error == "renewalInfo answered HTTP 503"
    assert update.state.next_check_at == T0 + 6 * HOUR  # RFC 9773 4.3.3
    assert (update.state.window_start, update.state.window_end, update.state.renew_at) == \
        (before.window_start, before.window_end, before.renew_at)
    assert update.renewal_time == before.renew_at and not update.new_pick


def test_a_failed_fetch_for_a_new_certificate_forgets_the_old_window() -> None:
    update = updated_ari_state(held("a.1"), "a.2", AriError("timed out"), T0, fraction=0.5, min_interval=FLOOR)
    assert update.state == AriState(cert_id="a.2", next_check_at=T0 + FLOOR, error="timed out")
    assert update.renewal_time is None  # the backstop applies until the CA answers


def test_the_next_answer_clears_the_error() -> None:
    failed = AriState(cert_id="a.1", next_check_at=T0, error="timed out")
    update = updated_ari_state(failed, "a.1", answered(), T0, fraction=0.5, min_interval=FLOOR)
    assert update.state.error is None and update.renewal_time == T0 + 41 * DAY


def test_a_ca_without_ari_leaves_the_backstop() -> None:
    update = updated_ari_state(held(), "a.1", None, T0, fraction=0.5, min_interval=FLOOR)
    assert update.state == AriState(cert_id="a.1", supported=False, next_check_at=T0 + FLOOR)
    assert update.renewal_time is None and not update.new_pick


def test_the_state_round_trips_through_the_store_row() -> None:
    state = held()
    row = RenewalState(name="web", **state.columns())
    assert AriState.of(row) == state
    assert set(state.columns()) == {c for c in RenewalState.model_fields if c.startswith("ari_")}
