"""An authoritative DNS server for the sandbox zones, on UDP and TCP at one loopback port.

It answers from the `ZoneStore` the Cloudflare emulator writes to, honouring the
store's propagation delay, so Pebble's DNS-01 validation and certd's
propagation checks see what a real Cloudflare nameserver would: AA answers,
NXDOMAIN/NODATA with the SOA, REFUSED outside its zones, several TXT values on
one name, CNAMEs followed across the zones it serves (each name once, so a loop
ends), and Cloudflare edge addresses (never the origin) for proxied records.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import struct
import threading
from collections import defaultdict
from collections.abc import Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from certd.sandbox.zones import SandboxRecord, SandboxZone, ZoneStore, normalize_name

__all__ = ["SandboxDNSServer", "EDGE_IPV4", "EDGE_IPV6", "AUTO_TTL", "NS_ADDRESS"]

log = logging.getLogger(__name__)

# Documentation addresses standing in for Cloudflare's anycast edge.
EDGE_IPV4 = ("203.0.113.10", "203.0.113.11")
EDGE_IPV6 = ("2001:db8::10", "2001:db8::11")
AUTO_TTL = 300  # what Cloudflare serves for ttl=1 ("automatic") and for proxied records
NS_ADDRESS = "127.0.0.1"  # the sandbox nameservers ns1/ns2.<zone> all live here
_SOA_TIMES = "10000 2400 604800 1800"  # refresh retry expire minimum, as Cloudflare serves them
_SOA_TTL = 1800
_MAX_CNAME_CHAIN = 8
_IN = dns.rdataclass.IN


class _Answer:
    """Sections being filled for one response."""

    def __init__(self) -> None:
        self.rcode = dns.rcode.NOERROR
        self.answer: list[dns.rrset.RRset] = []
        self.authority: list[dns.rrset.RRset] = []
        self.additional: list[dns.rrset.RRset] = []


class SandboxDNSServer:
    """UDP+TCP authoritative server on 127.0.0.1 (same free port for both) answering from a ZoneStore."""

    def __init__(self, store: ZoneStore, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store
        self._host, self._port = host, port
        self._udp: _UDPServer | None = None
        self._tcp: _TCPServer | None = None
        self._threads: list[threading.Thread] = []
        self.queries: list[tuple[str, str, str]] = []  # (transport, qname, qtype), for tests
        self._queries_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> SandboxDNSServer:
        if self._udp is not None:
            return self
        self._udp, self._tcp = self._bind_pair()
        servers: tuple[tuple[socketserver.BaseServer, str], ...] = (
            (self._udp, "sandbox-dns-udp"), (self._tcp, "sandbox-dns-tcp"))
        for server, name in servers:
            server.dns = self  # type: ignore[attr-defined]
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                      name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.debug("sandbox DNS listening on %s", self.address)
        return self

    def _bind_pair(self) -> tuple[_UDPServer, _TCPServer]:
        """Bind UDP on a free port, then TCP on the same one (retrying if TCP's is taken)."""
        last_error: OSError | None = None
        for _ in range(20):
            udp = _UDPServer((self._host, self._port), _UDPHandler)
            port = udp.server_address[1]
            try:
                tcp = _TCPServer((self._host, port), _TCPHandler)
                return udp, tcp
            except OSError as exc:
                udp.server_close()
                last_error = exc
                if self._port:
                    break
        raise OSError(f"could not bind UDP and TCP on one port at {self._host}: {last_error}")

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp = self._tcp = None
        self._threads = []

    def __enter__(self) -> SandboxDNSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._udp is None:
            raise RuntimeError("the sandbox DNS server is not running: call start() first")
        return int(self._udp.server_address[1])

    @property
    def host(self) -> str:
        return self._host

    @property
    def address(self) -> str:
        """"127.0.0.1:PORT", the form Pebble's -dnsserver flag takes."""
        return f"{self._host}:{self.port}"

    # -- answering -----------------------------------------------------------
    def respond(self, wire: bytes, *, transport: str) -> bytes | None:
        """Answer one query in wire format (None: not even a header to answer to)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.message.ShortHeader:
            return None
        except dns.exception.DNSException:
            return _formerr(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            response.flags &= ~dns.flags.AA
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            response.flags &= ~dns.flags.AA
        else:
            question = query.question[0]
            with self._queries_lock:
                self.queries.append((transport, question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
            answer = self.lookup(question.name, question.rdtype, question.rdclass)
            response.set_rcode(answer.rcode)
            if answer.rcode == dns.rcode.REFUSED:
                response.flags &= ~dns.flags.AA
            response.answer, response.authority, response.additional = (
                answer.answer, answer.authority, answer.additional)
        limit = 65535 if transport == "tcp" else max(512, query.payload if query.edns >= 0 else 512)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            # Too big for UDP: say so, the client retries over TCP.
            response.answer, response.authority, response.additional = [], [], []
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    def lookup(self, qname: dns.name.Name, qtype: int, qclass: int = _IN) -> _Answer:
        """What the authoritative server says about (qname, qtype)."""
        result = _Answer()
        name = normalize_name(qname.to_text())
        zone = self.store.zone_for(name) if qclass == _IN else None
        if zone is None:
            result.rcode = dns.rcode.REFUSED
            return result
        # Owner names keep the asker's spelling (resolvers may randomise case, "0x20").
        self._resolve(zone, name, qtype, result, chain=0, owner=qname.to_text(), seen={name})
        return result

    def _resolve(self, zone: SandboxZone, name: str, qtype: int, result: _Answer, *, chain: int,
                 owner: str, seen: set[str]) -> None:
        """Answer (name, qtype) from `zone`; a CNAME is followed into any zone this server is
        authoritative for (as one server hosting several zones does), each name once: a loop
        ends the answer at the CNAME that closes it."""
        nodes = _ZoneView(zone, self.store.visible_records(zone.id), self.store.serial(zone.id))
        rrsets, owner_exists = nodes.rrsets_at(name, owner=owner)
        if not owner_exists:
            wildcard = nodes.wildcard_for(name)
            if wildcard is not None:
                rrsets, owner_exists = nodes.rrsets_at(wildcard, owner=owner)
        if not owner_exists:
            result.rcode = dns.rcode.NXDOMAIN  # for a CNAME chain: about its last name (RFC 6604)
            result.authority.append(nodes.soa())
            return
        if qtype == dns.rdatatype.ANY:
            result.answer.extend(rrsets.values())
            return
        if qtype in rrsets:
            result.answer.append(rrsets[qtype])
            if qtype == dns.rdatatype.NS and name == zone.name:  # in-bailiwick glue
                result.additional.extend(nodes.glue())
            return
        cname = rrsets.get(dns.rdatatype.CNAME)
        if cname is not None:
            result.answer.append(cname)
            target = normalize_name(cname[0].target.to_text())
            target_zone = self.store.zone_for(target)
            if target_zone is not None and chain < _MAX_CNAME_CHAIN and target not in seen:
                seen.add(target)
                self._resolve(target_zone, target, qtype, result, chain=chain + 1, owner=target + ".",
                              seen=seen)
            return
        result.authority.append(nodes.soa())  # NODATA


class _ZoneView:
    """One zone's records, as DNS RRsets, at one moment (the propagated view)."""

    def __init__(self, zone: SandboxZone, records: Iterable[SandboxRecord], serial: int) -> None:
        self.zone = zone
        self.serial = serial
        self.by_name: dict[str, list[SandboxRecord]] = defaultdict(list)
        for record in records:
            self.by_name[record.name].append(record)

    def rrsets_at(self, name: str, *, owner: str | None = None) -> tuple[dict[int, dns.rrset.RRset], bool]:
        """RRsets at `name` (published under `owner`, for wildcards) and whether the name exists."""
        owner_name = dns.name.from_text(owner or name)
        grouped: dict[int, list[SandboxRecord]] = defaultdict(list)
        records = self.by_name.get(name, [])
        for record in records:
            grouped[dns.rdatatype.from_text(record.type)].append(record)
        rrsets: dict[int, dns.rrset.RRset] = {}
        proxied = any(r.proxied for r in records)
        if proxied:
            # The orange cloud: A/AAAA answers are the edge, whatever the origin is; no CNAME shows.
            for rtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME):
                grouped.pop(rtype, None)
            rrsets[dns.rdatatype.A] = dns.rrset.from_text_list(owner_name, AUTO_TTL, _IN, "A", list(EDGE_IPV4))
            rrsets[dns.rdatatype.AAAA] = dns.rrset.from_text_list(owner_name, AUTO_TTL, _IN, "AAAA",
                                                                  list(EDGE_IPV6))
        for rtype, group in grouped.items():
            rrsets[rtype] = _rrset(owner_name, rtype, group)
        if name == self.zone.name:
            rrsets[dns.rdatatype.SOA] = self.soa()
            rrsets.setdefault(dns.rdatatype.NS, dns.rrset.from_text_list(
                owner_name, 86400, _IN, "NS", [n + "." for n in self.zone.name_servers]))
        if name in self.zone.name_servers and not records:
            rrsets[dns.rdatatype.A] = dns.rrset.from_text(owner_name, 86400, _IN, "A", NS_ADDRESS)
        exists = bool(rrsets) or self._is_empty_non_terminal(name)
        return rrsets, exists

    def _is_empty_non_terminal(self, name: str) -> bool:
        suffix = "." + name
        return any(n.endswith(suffix) for n in self.by_name) or any(
            ns.endswith(suffix) for ns in self.zone.name_servers)

    def wildcard_for(self, name: str) -> str | None:
        """The `*.<closest encloser>` record name that covers `name`, if any (RFC 4592)."""
        labels = name.split(".")
        zone_depth = len(self.zone.name.split("."))
        for i in range(1, len(labels) - zone_depth + 1):
            encloser = ".".join(labels[i:])
            if encloser == self.zone.name or encloser in self.by_name or self._is_empty_non_terminal(encloser):
                candidate = "*." + encloser
                return candidate if candidate in self.by_name else None
        return None

    def soa(self) -> dns.rrset.RRset:
        zone = self.zone
        text = f"{zone.name_servers[0]}. dns.cloudflare.com. {self.serial} {_SOA_TIMES}"
        return dns.rrset.from_text(zone.name + ".", _SOA_TTL, _IN, "SOA", text)

    def glue(self) -> list[dns.rrset.RRset]:
        return [dns.rrset.from_text(ns + ".", 86400, _IN, "A", NS_ADDRESS) for ns in self.zone.name_servers]


def _rrset(owner: dns.name.Name, rtype: int, records: list[SandboxRecord]) -> dns.rrset.RRset:
    ttl = min(AUTO_TTL if r.ttl == 1 else r.ttl for r in records)
    rrset = dns.rrset.RRset(owner, _IN, rtype)
    for record in records:
        rrset.add(_rdata(record), ttl)
    return rrset


def _rdata(record: SandboxRecord) -> dns.rdata.Rdata:
    if record.type == "TXT":
        return _txt(record.content)
    if record.type in ("CNAME", "NS"):
        return dns.rdata.from_text(_IN, record.type, record.content + ".")
    if record.type == "MX":
        return dns.rdata.from_text(_IN, "MX", f"{record.priority} {record.content}.")
    return dns.rdata.from_text(_IN, record.type, record.content)


def _txt(content: str) -> dns.rdata.Rdata:
    """TXT content as Cloudflare publishes it: quoted zone-file strings as given, raw text cut in 255-byte pieces."""
    stripped = content.strip()
    if stripped.startswith('"') and stripped.endswith('"') and len(stripped) >= 2:
        try:
            return dns.rdata.from_text(_IN, "TXT", stripped)
        except dns.exception.DNSException:
            pass
    data = content.encode()
    pieces = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(_IN, dns.rdatatype.TXT, pieces)


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None
    (qid,) = struct.unpack("!H", wire[:2])
    return struct.pack("!HHHHHH", qid, int(dns.flags.QR) | int(dns.rcode.FORMERR), 0, 0, 0, 0)


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _UDPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        server: SandboxDNSServer = self.server.dns  # type: ignore[attr-defined]
        try:
            reply = server.respond(data, transport="udp")
        except Exception:  # noqa: BLE001 - a bad query must not kill the server; SERVFAIL instead
            log.exception("sandbox DNS failed to answer a UDP query")
            reply = _servfail(data)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TCPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: SandboxDNSServer = self.server.dns  # type: ignore[attr-defined]
        conn: socket.socket = self.request
        conn.settimeout(10)
        while True:
            try:
                header = _read_exact(conn, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                data = _read_exact(conn, length)
                if data is None:
                    return
            except OSError:
                return
            try:
                reply = server.respond(data, transport="tcp")
            except Exception:  # noqa: BLE001
                log.exception("sandbox DNS failed to answer a TCP query")
                reply = _servfail(data)
            if reply is None:
                return
            try:
                conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return


def _read_exact(conn: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = conn.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def _servfail(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None
    (qid,) = struct.unpack("!H", wire[:2])
    return struct.pack("!HHHHHH", qid, int(dns.flags.QR) | int(dns.rcode.SERVFAIL), 0, 0, 0, 0)
