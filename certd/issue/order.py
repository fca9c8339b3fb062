"""One ACME order for all names of a certificate, polled without fixed sleeps.

The `acme` library's own polling sleeps a whole second between requests; here
the interval starts small and grows, and never undercuts the server's
Retry-After.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
from acme import challenges, messages
from acme import client as acme_client
from acme import errors as acme_errors

from certd.metrics import acme_action, current_acme_action, observe_acme
from certd.retry_after import parse_retry_after
from certd.dns.challenges import challenge_name
from certd.errors import IssuanceError

log = logging.getLogger("certd.acme.order")

Presenter = Callable[[str, str], None]  # (fqdn, TXT value) -> record created
VisibilityWait = Callable[[dict[str, set[str]]], None]


class RateLimited(IssuanceError):
    """The CA said `rateLimited`; `retry_after` tells when to try again (if it said)."""

    def __init__(self, message: str, retry_after: dt.datetime | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedResponse(Exception):
    """A `rateLimited` problem with the Retry-After the `acme` library would drop."""

    def __init__(self, problem: messages.Error, retry_after: dt.datetime | None) -> None:
        super().__init__(str(problem))
        self.problem = problem
        self.retry_after = retry_after


class RetryAfterAwareNetwork(acme_client.ClientNetwork):
    """ClientNetwork that keeps Retry-After on rateLimited problems (RFC 8555 §6.6) and counts
    every request under its ACME action (certd.metrics; the caller names the action)."""

    def _send_request(self, method: str, url: str, *args: object, **kwargs: object) -> requests.Response:
        action = "new_nonce" if method == "HEAD" else current_acme_action()
        started = time.monotonic()
        try:
            response = super()._send_request(method, url, *args, **kwargs)  # type: ignore[arg-type]
        except requests.RequestException:
            observe_acme(action, "error", started)
            raise
        observe_acme(action, response.status_code, started)
        return response

    @classmethod
    def _check_response(cls, response: requests.Response,
                        content_type: str | None = None) -> requests.Response:
        try:
            return super()._check_response(response, content_type=content_type)
        except messages.Error as problem:
            if problem.code != "rateLimited":
                raise
            # Both forms (seconds, HTTP date) as aware UTC: acme's ClientV2.retry_after gives a
            # naive UTC time for dates, which read as local time is off by the UTC offset.
            retry_after = parse_retry_after(response.headers.get("Retry-After"),
                                            dt.datetime.now(dt.timezone.utc))
            raise RateLimitedResponse(problem, retry_after) from problem


class AccountGone(IssuanceError):
    """The CA no longer knows the stored account (reset test CA, deactivated account)."""


class ReplacesRejected(IssuanceError):
    """The CA refused the ARI `replaces` field; the order can be retried without it."""


class NewOrderWithReplaces(messages.NewOrder):
    """newOrder with RFC 9773's `replaces` (acme 5.x has no parameter for it)."""

    replaces: str | None = messages.jose.field("replaces", omitempty=True)  # type: ignore[assignment]


@dataclass
class OrderOutcome:
    fullchain_pem: str
    alternate_fullchains: list[str] = field(default_factory=list)
    profile: str | None = None


def problem_message(problem: messages.Error | None) -> str:
    if problem is None:
        return "no detail given"
    text = problem.detail or problem.description or str(problem.typ)
    subs = [f"{s.identifier.value if s.identifier else '?'}: {s.detail}" for s in (problem.subproblems or [])]
    return text + (f" ({'; '.join(subs)})" if subs else "")


class AcmeOrder:
    """Drives one order: create, solve DNS-01, poll, finalize, download chains."""

    def __init__(self, client: acme_client.ClientV2, *, timeout: float,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock

    def _supported_profile(self, profile: str | None) -> str | None:
        if not profile:
            return None
        meta = getattr(self._client.directory, "meta", None)
        offered = getattr(meta, "profiles", None) or {}
        if profile not in offered:
            log.info("the CA offers no ACME profile %r; ordering without a profile", profile)
            return None
        return profile

    def _new_order(self, csr_pem: bytes, domains: list[str], profile: str | None,
                   replaces: str | None) -> messages.OrderResource:
        if replaces is None:
            return self._client.new_order(csr_pem, profile=profile)
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=d) for d in domains]
        order = NewOrderWithReplaces(identifiers=identifiers, profile=profile or None,
                                     replaces=replaces)
        response = self._client._post(self._client.directory["newOrder"], order)  # noqa: SLF001
        body = messages.Order.from_json(response.json())
        authorizations = [
            messages.AuthorizationResource(
                body=messages.Authorization.from_json(self._client._post_as_get(url).json()),  # noqa: SLF001
                uri=url)
            for url in body.authorizations
        ]
        return messages.OrderResource(body=body, uri=response.headers.get("Location"),
                                      authorizations=authorizations, csr_pem=csr_pem)

    def run(self, csr_pem: bytes, domains: list[str], *, profile: str | None,
            present: Presenter, wait_visible: VisibilityWait,
            replaces: str | None = None) -> OrderOutcome:
        deadline = self._clock() + self._timeout
        profile = self._supported_profile(profile)
        try:
            with acme_action("new_order"):
                orderr = self._new_order(csr_pem, domains, profile, replaces)
            pending = self._solve(orderr, present, wait_visible)
            with acme_action("get_authorization"):
                self._wait_authorizations(pending, deadline)
            return self._finalize(orderr, deadline, profile)
        except RateLimitedResponse as exc:
            raise RateLimited(f"the CA rate-limited this order: {problem_message(exc.problem)}",
                              exc.retry_after) from None
        except messages.Error as exc:
            raise self._translate(exc, replaces) from None
        except acme_errors.ConflictError:
            # acme raises ConflictError on any 409 before reading the body; during a
            # `replaces` order that is RFC 9773's alreadyReplaced.
            if replaces:
                raise ReplacesRejected("the CA answered 409: the certificate was already replaced") from None
            raise IssuanceError("the CA answered 409 Conflict to the order") from None
        except acme_errors.Error as exc:
            raise IssuanceError(f"ACME order failed: {exc}") from None
        except requests.RequestException as exc:
            raise IssuanceError(f"ACME server unreachable: {type(exc).__name__}: {exc}") from None

    def _solve(self, orderr: messages.OrderResource, present: Presenter,
               wait_visible: VisibilityWait) -> list[messages.AuthorizationResource]:
        key = self._client.net.key
        to_answer: list[tuple[messages.AuthorizationResource, messages.ChallengeBody]] = []
        expected: dict[str, set[str]] = {}
        for authzr in orderr.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            challb = next((c for c in authzr.body.challenges if isinstance(c.chall, challenges.DNS01)), None)
            if challb is None:
                raise IssuanceError(f"the CA offers no dns-01 challenge for {authzr.body.identifier.value}")
            fqdn = challenge_name(authzr.body.identifier.value)
            value = challb.chall.validation(key)
            present(fqdn, value)
            expected.setdefault(fqdn, set()).add(value)
            to_answer.append((authzr, challb))
        if expected:
            wait_visible(expected)
        with acme_action("answer_challenge"):
            for _authzr, challb in to_answer:
                self._client.answer_challenge(challb, challb.chall.response(key))
        return [a for a, _ in to_answer]

    def _backoff(self, delay: float, response: requests.Response | None, deadline: float) -> float:
        wait = delay
        if response is not None and "Retry-After" in response.headers:
            try:
                wait = max(wait, float(response.headers["Retry-After"]))
            except ValueError:
                pass
        wait = min(wait, max(deadline - self._clock(), 0.0))
        self._sleep(wait)
        return min(delay * 1.5, 2.0)

    def _wait_authorizations(self, pending: list[messages.AuthorizationResource], deadline: float) -> None:
        delay = 0.05
        while pending:
            still: list[messages.AuthorizationResource] = []
            last_response = None
            for authzr in pending:
                updated, last_response = self._client.poll(authzr)
                status = updated.body.status
                if status == messages.STATUS_VALID:
                    continue
                if status == messages.STATUS_INVALID:
                    errors = [problem_message(c.error) for c in updated.body.challenges if c.error]
                    raise IssuanceError(
                        f"validation failed for {updated.body.identifier.value}: "
                        f"{'; '.join(errors) or 'no detail given'}"
                    )
                still.append(updated)
            pending = still
            if pending:
                if self._clock() >= deadline:
                    names = ", ".join(a.body.identifier.value for a in pending)
                    raise IssuanceError(f"authorizations still pending after {self._timeout:.0f}s: {names}")
                delay = self._backoff(delay, last_response, deadline)

    def _finalize(self, orderr: messages.OrderResource, deadline: float,
                  profile: str | None) -> OrderOutcome:
        with acme_action("finalize"):
            orderr = self._client.begin_finalization(orderr)
        delay = 0.05
        body = orderr.body
        response: requests.Response | None = None
        while True:
            if body.status == messages.STATUS_VALID and body.certificate:
                with acme_action("download_certificate"):
                    response = self._client._post_as_get(body.certificate)  # noqa: SLF001
                    alternates = [self._client._post_as_get(url).text  # noqa: SLF001
                                  for url in self._client._get_links(response, "alternate")]  # noqa: SLF001
                return OrderOutcome(response.text, alternates, profile)
            if body.status == messages.STATUS_INVALID:
                raise IssuanceError(f"the CA refused to issue: {problem_message(body.error)}")
            if self._clock() >= deadline:
                raise IssuanceError(f"order still {body.status} after {self._timeout:.0f}s")
            delay = self._backoff(delay, response, deadline)
            with acme_action("poll_order"):
                response = self._client._post_as_get(orderr.uri)  # noqa: SLF001
            body = messages.Order.from_json(response.json())
            if body.status == messages.STATUS_READY:
                with acme_action("finalize"):
                    orderr = self._client.begin_finalization(orderr)
                body = orderr.body

    @staticmethod
    def _translate(exc: messages.Error, replaces: str | None) -> IssuanceError:
        text = problem_message(exc)
        if exc.code == "rateLimited":
            return RateLimited(f"the CA rate-limited this order: {text}", None)
        if exc.code == "accountDoesNotExist":
            return AccountGone(f"the CA does not know the stored ACME account: {text}")
        if replaces and (exc.code == "alreadyReplaced" or "replace" in text.lower()):
            return ReplacesRejected(f"the CA refused to treat this order as a replacement: {text}")
        return IssuanceError(f"the CA refused the order ({exc.code or exc.typ}): {text}")
