"""A Mosquitto of the test's own: free loopback ports, a password file, a TLS listener with a
test CA, persistence in its own directory. Never the system's broker or its config."""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests import pki

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def available() -> str | None:
    """Why Mosquitto cannot run here (None: it can)."""
    for path in (MOSQUITTO, MOSQUITTO_PASSWD):
        if not os.access(path, os.X_OK):
            return f"{path} not found (Debian packages mosquitto and mosquitto-clients)"
    return None


@dataclass
class Broker:
    directory: Path
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    users: dict[str, str] = field(default_factory=lambda: {
        "certd": "certd-" + secrets.token_hex(12), "device": "device-" + secrets.token_hex(12),
        "ha": "ha-" + secrets.token_hex(12)})
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        self.ca = pki.root("certd MQTT test CA")
        server = pki.leaf(["localhost"], self.ca, key=pki.ec_key())
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_text(self.ca.pem)
        (self.directory / "server.pem").write_text(server.pem)
        key = self.directory / "server.key"
        key.write_text(pki.key_pem(server.key))
        key.chmod(0o600)
        passwords = self.directory / "passwords"
        for index, (user, password) in enumerate(self.users.items()):
            subprocess.run([MOSQUITTO_PASSWD, *(["-c"] if index == 0 else []), "-b", str(passwords), user, password],
                           check=True, capture_output=True)
        passwords.chmod(0o600)
        self.config = self.directory / "mosquitto.conf"
        self.config.write_text(
            # Run as whoever runs the tests (as root Mosquitto would switch to user "mosquitto").
            f"user {getpass.getuser()}\n"
            f"per_listener_settings false\nallow_anonymous false\npassword_file {passwords}\n"
            f"persistence true\npersistence_location {self.directory / 'data'}/\n"
            "autosave_interval 1\n"
            f"log_dest file {self.log_path}\nlog_type error\nlog_type warning\nlog_type notice\n"
            "log_type information\nconnection_messages true\nmax_queued_messages 100000\n"
            f"listener {self.port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\ncafile {self.ca_file}\n"
            f"certfile {self.directory / 'server.pem'}\nkeyfile {key}\n")

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def start(self) -> "Broker":
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2), \
                        socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its retained messages and sessions, then exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid
