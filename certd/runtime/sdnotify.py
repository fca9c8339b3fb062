"""The few lines of systemd's notify protocol certd needs (sd_notify(3)), without a library.

A datagram of `KEY=value` lines to the AF_UNIX socket named by $NOTIFY_SOCKET
(a path, or `@name` for the abstract namespace). Outside systemd the variable
is unset and every call does nothing. The watchdog interval comes from
$WATCHDOG_USEC (only when $WATCHDOG_PID is unset or names this process).
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("certd.sdnotify")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self.watchdog_usec = watchdog_usec
        self._last_status: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the timeout systemd gave, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2_000_000 if self.watchdog_usec else None

    def send(self, **fields: str) -> bool:
        """Send `fields` as KEY=value lines; False if not under systemd or the send failed."""
        if self._address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        address = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the event loop: if the manager is not reading, the message is dropped.
                sock.sendto(message, socket.MSG_DONTWAIT, address)
        except BlockingIOError:
            log.debug("sd_notify to %s dropped: the receiver's queue is full", self._address)
            return False
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self._address, exc.strerror or exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        self._last_status = status
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        """STATUS= only when it changed (checks finish often; systemd needs no repeats)."""
        if status == self._last_status:
            return False
        self._last_status = status
        return self.send(STATUS=status)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload (systemd >= 253) match this to the reload request.
        return self.send(RELOADING="1", MONOTONIC_USEC=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000))

    def stopping(self) -> bool:
        return self.send(STOPPING="1")

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")
