"""One provisioning attempt with one charger: the conversation, from its facts to the confirmation.

1. its certificate-store facts (stored ones, or GetConfiguration / GetVariables now);
2. GetInstalledCertificateIds: what it holds, mapped back to known certificates;
3. `gates.plan_installs`: which roots to send (the most needed first), or why none can go;
4. InstallCertificate, one PEM per request, stopping when the charger goes away or times out;
5. GetInstalledCertificateIds again when something was accepted: only a listing confirms.

Runs on the event loop (it awaits the charger's answers) and touches no engine state:
the result says what happened, the engine records it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from certd.rollover import gates as rules
from certd.rollover.gates import identity_of
from certd.rollover.hashdata import match_installed
from certd.rollover.plans import Attempt, ProvisionContext
from certd.rollover.provision import ChargerFacts, Provisioner

log = logging.getLogger("certd.rollover")


@dataclass(frozen=True)
class AttemptResult:
    """How the attempt ended, and the facts it used."""

    attempt: Attempt
    facts: ChargerFacts
    answered: bool | None  # None: the stored facts were used; else whether the charger answered now


def first_failure(failures: list[tuple[str, str]]) -> tuple[str, str]:
    """The attempt's outcome and reason: the first failure, noting how many more there were."""
    outcome, reason = failures[0]
    if len(failures) > 1:
        reason += f" (+{len(failures) - 1} more)"
    return outcome, reason


async def provision_charger(provisioner: Provisioner, charger_id: str, context: ProvisionContext,
                            on_install_sent: Callable[[], None] = lambda: None) -> AttemptResult:
    """Give one charger the roots its listener's plan says it lacks; `on_install_sent` is
    called (on the loop) after every InstallCertificate request."""
    plan, known = context.plan, context.known
    facts = context.facts
    answered: bool | None = None
    if facts is None:
        facts = await provisioner.facts(charger_id)
        answered = facts.answered
        for note in facts.notes:
            log.debug("charger %s: %s", charger_id, note)

    def ended(attempt: Attempt) -> AttemptResult:
        return AttemptResult(attempt, facts, answered)  # type: ignore[arg-type]

    listing = await provisioner.installed(charger_id)
    if not listing.reply.ok:
        return ended(Attempt(listing.reply.outcome, f"GetInstalledCertificateIds: {listing.reply.detail}"))
    held_fps, unknown = match_installed(listing.hash_data, context.index)
    held = [known[fp] for fp in held_fps]
    target = rules.target_for(plan.members, plan.priority, facts.additional_root_check)
    used = facts.store_used if facts.store_used is not None else len(held) + unknown
    install_plan = rules.plan_installs(
        target, held, list(known.values()), priority=plan.priority,
        additional_root_check=facts.additional_root_check, store_max=facts.store_max, store_used=used)
    sent = 0
    failures: list[tuple[str, str]] = []
    accepted = 0
    for cert in install_plan.send:
        reply = await provisioner.install(charger_id, cert.pem)
        sent += 1
        on_install_sent()
        if reply.ok:
            accepted += 1
            log.info("charger %s accepted %s", charger_id, cert.subject)
            continue
        failures.append((reply.outcome, f"{cert.subject}: {reply.detail or reply.outcome}"))
        log.warning("charger %s did not install %s: %s %s", charger_id, cert.subject,
                    reply.outcome, reply.detail or "")
        if reply.outcome in ("offline", "timeout"):
            break
    # A refusal may come from a rule the stored facts do not show (AdditionalRootCertificateCheck
    # switched on, a full store): the next attempt asks the charger again.
    refused = any(outcome == "Rejected" for outcome, _ in failures)
    if accepted:
        listing = await provisioner.installed(charger_id)
        if listing.reply.ok:
            held_fps, unknown = match_installed(listing.hash_data, context.index)
        else:
            failures.append((listing.reply.outcome, f"GetInstalledCertificateIds: {listing.reply.detail}"))
    held_ids = rules.identities(known[fp] for fp in held_fps)
    missing = [c for c in target if identity_of(c) not in held_ids]
    if not missing:
        return ended(Attempt("Accepted", None, sent, frozenset(held_fps), held_ids, unknown, refused))
    if not failures and install_plan.problems:
        problem = install_plan.problems[0]
        failures.append((problem.code, problem.reason))
    if not failures:
        names = ", ".join(sorted({c.subject for c in missing}))
        failures.append(("Failed", f"installed, but GetInstalledCertificateIds does not list {names}"))
    outcome, reason = first_failure(failures)
    return ended(Attempt(outcome, reason, sent, frozenset(held_fps), held_ids, unknown, refused))
