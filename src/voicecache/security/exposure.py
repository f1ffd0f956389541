"""Whether a server is exposed beyond this machine: decides if anonymous callers may be let in.

A server that listens on loopback only serves this machine's users; anything else (every
interface, a LAN address, a name that does not resolve to loopback alone) is public, and then
API keys are required unless `VOICECACHE_ALLOW_ANONYMOUS=1` says otherwise.
"""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` listens on loopback only: a loopback address, or a
    name whose every address is loopback. Empty (every interface), `0`, `::`, `0.0.0.0` and
    names that do not resolve are public."""
    host = host.strip()
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]).partition("%")[0] for info in found}
    try:
        return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    except ValueError:
        return False
