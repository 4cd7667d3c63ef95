"""Where webhooks may not point: networks the service refuses to POST to (server-side request forgery).

An operator of one account registers URLs that the service then calls from inside its own network. By
default the blocked networks are those no receiver lives on but that hold secrets or make no sense: cloud
instance metadata (169.254.169.254 and the rest of link-local, AWS's IPv6 fd00:ec2::254), "this network",
multicast and broadcast. Loopback and private networks stay allowed — a self-hosted receiver is often on
localhost or the LAN; a service shared by untrusted tenants should add them (`webhooks.blocked_networks`).

The check runs twice: on registration for IP literals (a clear 422), and on every connection against the
addresses the host name resolves to then; the connection goes to the address that was checked, so a
name that re-resolves to a blocked address later (DNS rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from tradeguard.errors import InputError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_BLOCKED: Final = (
    "0.0.0.0/8",  # "this network"
    "169.254.0.0/16",  # link-local, cloud instance metadata
    "224.0.0.0/4",  # multicast
    "255.255.255.255/32",  # broadcast
    "::/128",  # unspecified
    "fe80::/10",  # link-local
    "fd00:ec2::254/128",  # AWS instance metadata over IPv6
    "ff00::/8",  # multicast
)


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings as networks; ValueError naming the bad one."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a network: {value!r} ({exc})") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """The blocked networks; an IPv4-mapped IPv6 address is judged as its IPv4 address."""

    blocked: tuple[IPNetwork, ...] = parse_networks(DEFAULT_BLOCKED)

    def blocked_by(self, address: str | IPAddress) -> IPNetwork | None:
        """The blocked network holding `address`, if any."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return next((net for net in self.blocked if ip.version == net.version and ip in net), None)

    def check_host(self, host: str) -> None:
        """InputError when `host` is an IP literal in a blocked network (names are checked on connect)."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return
        net = self.blocked_by(ip)
        if net is not None:
            raise InputError(f"url points at {ip}, in the blocked network {net} (webhooks.blocked_networks)")
