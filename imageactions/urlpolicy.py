"""Which URLs the service may fetch from or send to: schemes, hosts and ports, and never a
private, loopback or link-local address unless the operator allows its network.

Checked twice: cheaply on the literal URL when an action is created, and on the resolved
address right before connecting (and again on every redirect), so DNS cannot smuggle in a
private address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services answer credentials to anyone who asks from inside the cloud.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
DEFAULT_PORTS = {"http": 80, "https": 443}


class UrlRefused(Exception):
    """The URL or the address it leads to is not allowed; the text says why, for the user."""


@dataclass(frozen=True)
class UrlPolicy:
    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    allowed_hosts: frozenset[str] = frozenset()  # empty: any host
    allowed_ports: frozenset[int] = frozenset()  # empty: any port
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())

    @classmethod
    def from_settings(cls) -> UrlPolicy:
        return cls(
            allowed_schemes=frozenset(s.lower() for s in settings.URL_ALLOWED_SCHEMES),
            allowed_hosts=frozenset(h.lower().rstrip(".") for h in settings.URL_ALLOWED_HOSTS),
            allowed_ports=frozenset(int(p) for p in settings.URL_ALLOWED_PORTS),
            allowed_networks=tuple(ipaddress.ip_network(n, strict=False) for n in settings.URL_ALLOWED_NETWORKS),
        )

    # -- the cheap check on the URL as written -------------------------------------------

    def check_url(self, url: str) -> tuple[str, str, int]:
        """(scheme, host, port) of `url` when its scheme, host and port are allowed and a
        literal IP host is an allowed address; UrlRefused otherwise. No DNS lookup."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise UrlRefused(f"'{url}' is not a valid URL: {error}") from None
        scheme = parts.scheme.lower()
        if scheme not in self.allowed_schemes:
            allowed = ", ".join(sorted(self.allowed_schemes)) or "none"
            raise UrlRefused(f"the scheme '{scheme}' is not allowed (allowed: {allowed})")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise UrlRefused(f"'{url}' has no host name")
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("URLs with a user name or password are not accepted")
        if self.allowed_hosts and host not in self.allowed_hosts:
            raise UrlRefused(f"the host '{host}' is not in the list of allowed hosts")
        port = port or DEFAULT_PORTS.get(scheme, 0)
        if self.allowed_ports and port not in self.allowed_ports:
            allowed = ", ".join(str(p) for p in sorted(self.allowed_ports))
            raise UrlRefused(f"the port {port} is not allowed (allowed: {allowed})")
        literal = _literal_address(host)
        if literal is not None:
            self.check_address(literal)
        elif not _is_host_name(host):
            raise UrlRefused(f"'{host}' is not a valid host name")
        return scheme, host, port

    # -- the check on the address actually connected to ----------------------------------

    def check_address(self, address: IPAddress | str) -> IPAddress:
        """`address` when the service may connect to it; UrlRefused naming the kind otherwise."""
        address = ipaddress.ip_address(address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in network for network in self.allowed_networks):
            return address
        kind = forbidden_kind(address)
        if kind:
            raise UrlRefused(f"{kind} addresses are refused")
        return address

    def address_of(self, url: str) -> tuple[str, int, IPAddress]:
        """(host, port, address to connect to) of `url`: the URL as written and then the
        addresses its host resolves to, checked; UrlRefused or UnresolvableHost otherwise."""
        _scheme, host, port = self.check_url(url)
        return host, port, self.resolve(host, port)

    def resolve(self, host: str, port: int) -> IPAddress:
        """The first allowed address `host` resolves to.

        Addresses that are not allowed are skipped rather than fatal: connecting to an allowed
        one of them is safe because the connection is pinned to it (see actions_import.sources).
        """
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):  # UnicodeError: a name IDNA cannot encode (a..b, a label over 63)
            raise UnresolvableHost(f"The host name '{host}' could not be resolved") from None
        refusal = None
        for info in infos:
            try:
                return self.check_address(info[4][0])
            except UrlRefused as error:
                refusal = refusal or error
        raise refusal or UnresolvableHost(f"The host name '{host}' could not be resolved")


def _is_host_name(host: str) -> bool:
    """Whether `host` is a name DNS can be asked for (IDNA-encodable: no empty label, none over 63)."""
    try:
        encoded = host.encode("idna")
    except UnicodeError:
        return False
    return 0 < len(encoded) <= 253


class UnresolvableHost(Exception):
    """DNS gave no address for the host."""


def forbidden_kind(address: IPAddress) -> str | None:
    """Why `address` is refused by default ('loopback', 'private', ...), or None when it is public."""
    if address in METADATA_ADDRESSES or address.is_link_local:
        return "link-local/metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE):
        return "private"
    if not address.is_global:
        return "reserved"
    return None


_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
