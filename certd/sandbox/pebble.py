"""Run Pebble, Let's Encrypt's test CA, on loopback for tests and `certd demo`.

Pebble validates DNS-01 for real, against the DNS server given to it (the
sandbox one). `PEBBLE_VA_ALWAYS_VALID` is never set, even if inherited from the
environment: a test that passes without a published TXT record proves nothing.

The Debian package ships no certificate for Pebble's own HTTPS listener, so a
throwaway CA and leaf are made here; `https_ca_path` is what certd's ACME
client must trust to talk to Pebble. (That CA is not the one Pebble issues
from: Pebble makes a new issuing root at every start, see `roots()`.)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["PebbleServer", "PebbleError", "PebbleNotFoundError", "find_pebble", "DEFAULT_PEBBLE"]

DEFAULT_PEBBLE = "/usr/bin/pebble"
_FORBIDDEN_ENV = "PEBBLE_VA_ALWAYS_VALID"
_START_TIMEOUT = 30.0


class PebbleError(RuntimeError):
    """Pebble failed to start, died, or answered wrongly; the message carries its log tail."""


class PebbleNotFoundError(PebbleError, FileNotFoundError):
    """No Pebble binary."""


def find_pebble(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Pebble binary: `explicit`, else $PEBBLE_BIN, else `pebble` on PATH, else /usr/bin/pebble.

    A binary named explicitly (argument or $PEBBLE_BIN) must exist: no silent fallback.
    """
    named = explicit if explicit is not None else os.environ.get("PEBBLE_BIN") or None
    if named is not None:
        if os.access(named, os.X_OK) and Path(named).is_file():
            return Path(named)
        raise PebbleNotFoundError(f"Pebble binary {os.fspath(named)} does not exist or is not executable "
                                  "(given as argument or PEBBLE_BIN)")
    for candidate in (shutil.which("pebble"), DEFAULT_PEBBLE):
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    raise PebbleNotFoundError(
        "Pebble binary not found (looked at PATH and /usr/bin/pebble). "
        "Install it with `apt-get install pebble` (Debian/Ubuntu) or "
        "`go install github.com/letsencrypt/pebble/v2/cmd/pebble@latest`, or set PEBBLE_BIN."
    )


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _write_listener_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a localhost/127.0.0.1 leaf for Pebble's HTTPS listener: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certd sandbox Pebble listener CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "listener-ca.pem", directory / "listener-cert.pem", \
        directory / "listener-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class PebbleServer:
    """One Pebble process on loopback ports, validating DNS-01 against `dns_server`.

    `nonce_reject_percent` is Pebble's PEBBLE_WFE_NONCEREJECT. Pebble rejects 5%
    of good nonces by default; the `acme` library retries a badNonce only once,
    which would make a test suite fail at random, so the default here is 0.
    Pass a value to test badNonce handling on purpose.

    PEBBLE_* variables inherited from the environment are dropped so a stray
    shell setting cannot change a test; pass them in `extra_env` instead.
    """

    def __init__(
        self, dns_server: str, *, alternate_roots: int = 0, chain_length: int | None = None,
        validity_seconds: int | None = None, eab: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None, nonce_reject_percent: int | None = 0,
        binary: str | os.PathLike[str] | None = None, workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        if extra_env and _FORBIDDEN_ENV in extra_env:
            raise ValueError(f"{_FORBIDDEN_ENV} would skip challenge validation; the sandbox never sets it")
        if alternate_roots < 0:
            raise ValueError("alternate_roots must be >= 0")
        self.dns_server = dns_server
        self.alternate_roots = alternate_roots
        self.chain_length = chain_length
        self.validity_seconds = validity_seconds
        self.eab = dict(eab) if eab else None
        self.extra_env = dict(extra_env or {})
        self.nonce_reject_percent = nonce_reject_percent
        self._binary = binary
        self._own_workdir = workdir is None
        self._workdir = Path(workdir) if workdir else None
        self._process: subprocess.Popen[bytes] | None = None
        self._ports: dict[str, int] = {}
        self._ca_path: Path | None = None
        self._config_path: Path | None = None
        self._log_file: object = None

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> PebbleServer:
        if self._process is not None:
            return self
        binary = find_pebble(self._binary)
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="certd-pebble-"))
        if self._ca_path is None:
            self._ca_path, cert, key = _write_listener_tls(self._workdir)
            self._ports = {name: _free_port() for name in ("acme", "management", "http", "tls")}
            self._config_path = self._write_config(cert, key)
        self._launch(binary)
        return self

    def _write_config(self, cert: Path, key: Path) -> Path:
        config: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self._ports['acme']}",
            "managementListenAddress": f"127.0.0.1:{self._ports['management']}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": self._ports["http"],
            "tlsPort": self._ports["tls"],
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(self.eab),
        }
        if self.eab:
            config["externalAccountMACKeys"] = self.eab
        if self.validity_seconds is not None:
            config["certificateValidityPeriod"] = int(self.validity_seconds)
        assert self._workdir is not None
        path = self._workdir / "pebble-config.json"
        path.write_text(json.dumps({"pebble": config}, indent=2))
        return path

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0",
                    "PEBBLE_ALTERNATE_ROOTS": str(self.alternate_roots)})
        if self.chain_length is not None:
            env["PEBBLE_CHAIN_LENGTH"] = str(self.chain_length)
        if self.nonce_reject_percent is not None:
            env["PEBBLE_WFE_NONCEREJECT"] = str(self.nonce_reject_percent)
        env.update(self.extra_env)
        env.pop(_FORBIDDEN_ENV, None)
        return env

    def _launch(self, binary: Path) -> None:
        assert self._workdir is not None and self._config_path is not None
        log_path = self.log_path
        log_file = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._log_file = log_file
        self._process = subprocess.Popen(
            [str(binary), "-config", str(self._config_path), "-dnsserver", self.dns_server],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=self._environment(), cwd=self._workdir, start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise

    def _wait_ready(self) -> None:
        """Poll the directory (short growing intervals) until Pebble answers or dies."""
        deadline = time.monotonic() + _START_TIMEOUT
        interval = 0.02
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise PebbleError(f"Pebble exited with status {self._process.returncode} while starting"
                                  f"{self._tail_text()}")
            try:
                directory = json.loads(self._get(self.directory_url, timeout=2))
                if "newOrder" in directory:
                    return
            except (OSError, ValueError) as exc:
                last_error = exc
            time.sleep(interval)
            interval = min(interval * 1.5, 0.25)
        raise PebbleError(f"Pebble did not serve {self.directory_url} within {_START_TIMEOUT:.0f}s "
                          f"(last error: {last_error}){self._tail_text()}")

    def stop(self) -> None:
        """Stop Pebble and delete its temporary directory (if this object made it)."""
        self._terminate()
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._ca_path = None
            self._config_path = None

    def restart(self) -> None:
        """Restart on the same ports with the same listener certificate; Pebble makes a new CA."""
        if self._config_path is None:
            raise PebbleError("Pebble was never started")
        self._terminate()
        self._launch(find_pebble(self._binary))

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        log_file, self._log_file = self._log_file, None
        if log_file is not None:
            log_file.close()  # type: ignore[attr-defined]

    def __enter__(self) -> PebbleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests and certd use -------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self._port('acme')}/dir"

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self._port('management')}"

    @property
    def https_ca_path(self) -> Path:
        """PEM of the CA that signed Pebble's HTTPS listener certificate."""
        if self._ca_path is None:
            raise PebbleError("Pebble is not started")
        return self._ca_path

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise PebbleError("Pebble is not started")
        return self._workdir / "pebble.log"

    def roots(self) -> list[str]:
        """PEM of the issuing root(s): index 0 is the default chain, then each alternate."""
        return [self._management_pem(f"/roots/{i}") for i in range(self.alternate_roots + 1)]

    def intermediates(self) -> list[str]:
        """PEM of the intermediate that issues leaves, per root (same order as `roots()`).

        With chain_length > 1 the extra intermediates between it and the root
        are not served by Pebble's management API; take them from issued chains.
        """
        return [self._management_pem(f"/intermediates/{i}") for i in range(self.alternate_roots + 1)]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, PebbleError):
            return ""

    # -- plumbing ------------------------------------------------------------
    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise PebbleError("Pebble is not started")
        return self._ports[name]

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.https_ca_path))

    def _get(self, url: str, *, timeout: float = 10) -> bytes:
        with urllib.request.urlopen(url, context=self._ssl_context(), timeout=timeout) as response:
            return bytes(response.read())

    def _management_pem(self, path: str) -> str:
        if not self.running:
            raise PebbleError(f"Pebble is not running{self._tail_text()}")
        try:
            pem = self._get(self.management_url + path).decode()
        except (OSError, urllib.error.URLError) as exc:
            raise PebbleError(f"Pebble management API failed for {path}: {exc}{self._tail_text()}") from exc
        if "BEGIN CERTIFICATE" not in pem:
            raise PebbleError(f"Pebble management API returned no certificate for {path}")
        return pem

    def _tail_text(self) -> str:
        tail = self.log_tail()
        return f"\n--- Pebble log tail ---\n{tail}" if tail else ""
