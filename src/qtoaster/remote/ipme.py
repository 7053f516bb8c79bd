"""This machine's own IP addresses, for qmail-remote's "am I an MX?" rule (spec 17.2).

Like qmail's ipme.c: 127.0.0.1 and 0.0.0.0 always (qmail adds both by hand), ::1, and the
address of every interface; NOT the whole of 127/8 (only what an interface carries).
IPv4 comes from the SIOCGIFCONF ioctl (ipme.c's own source; Linux lists every address of
every interface there, secondary ones included), IPv6 from /proc/net/if_inet6.  Where a
source is missing (another OS, no /proc) it contributes nothing: the fixed addresses stay.

Invariant: every address is in `ipaddress` compressed form, so callers compare strings.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

_ALWAYS = frozenset({"127.0.0.1", "0.0.0.0", "::1"})
_SIOCGIFCONF = 0x8912  # linux/sockios.h
_IFNAMSIZ = 16
_IF_INET6 = Path("/proc/net/if_inet6")


def local_addresses() -> frozenset[str]:
    """Every address of this machine (see the module docstring); never raises."""
    return _ALWAYS | _ipv4_interfaces() | _ipv6_interfaces()


def _ipv4_interfaces() -> frozenset[str]:
    # struct ifreq is IFNAMSIZ + a 24-byte union on LP64 (16 on 32-bit); the sockaddr_in
    # inside it has family (2), port (2), then the address (4).
    ifreq_size = _IFNAMSIZ + (24 if struct.calcsize("P") == 8 else 16)
    buffer = array.array("B", bytes(ifreq_size * 256))
    address, _ = buffer.buffer_info()
    ifconf = struct.pack("iL", len(buffer), address)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            result = fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, ifconf)
    except OSError:
        return frozenset()
    length = struct.unpack("iL", result)[0]
    raw = buffer.tobytes()[:length]
    found = set()
    for offset in range(0, length - ifreq_size + 1, ifreq_size):
        family = struct.unpack_from("H", raw, offset + _IFNAMSIZ)[0]
        if family == socket.AF_INET:
            start = offset + _IFNAMSIZ + 4
            found.add(socket.inet_ntoa(raw[start : start + 4]))
    return frozenset(found)


def _ipv6_interfaces() -> frozenset[str]:
    # Each line: 32 hex digits of address, ifindex, prefix length, scope, flags, name.
    try:
        text = _IF_INET6.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return frozenset()
    found = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(ipaddress.IPv6Address(bytes.fromhex(fields[0])).compressed)
            except ValueError:
                continue
    return frozenset(found)
