"""UrlPolicy: which URLs and addresses sources may use."""

import ipaddress

import pytest

from imageactions.urlpolicy import UnresolvableHost, UrlPolicy, UrlRefused

DEFAULT = UrlPolicy()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "private"),
        ("169.254.169.254", "link-local/metadata"),
        ("169.254.1.1", "link-local/metadata"),
        ("fe80::1", "link-local/metadata"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_default_policy_refuses_non_public_addresses(address, kind):
    with pytest.raises(UrlRefused, match=f"^{kind} addresses are refused$"):
        DEFAULT.check_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"])
def test_default_policy_allows_public_addresses(address):
    assert DEFAULT.check_address(address) == ipaddress.ip_address(address)


def test_allowed_networks_open_a_private_range_but_not_the_metadata_address_outside_it():
    policy = UrlPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    assert policy.check_address("127.0.0.2") == ipaddress.ip_address("127.0.0.2")
    with pytest.raises(UrlRefused, match="link-local/metadata"):
        policy.check_address("169.254.169.254")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "the scheme 'file' is not allowed (allowed: http, https)"),
        ("gopher://example.com/", "the scheme 'gopher' is not allowed (allowed: http, https)"),
        ("http:///path", "'http:///path' has no host name"),
        ("http://[::1]:8080/x", "loopback addresses are refused"),
        ("http://169.254.169.254/", "link-local/metadata addresses are refused"),
        ("http://a:b@example.com/", "URLs with a user name or password are not accepted"),
        ("http://example.com:99999/", "'http://example.com:99999/' is not a valid URL: Port out of range 0-65535"),
    ],
)
def test_literal_url_check_refuses_with_a_reason(url, reason):
    with pytest.raises(UrlRefused) as refused:
        DEFAULT.check_url(url)
    assert str(refused.value) == reason


def test_host_and_port_allowlists_apply_when_set():
    policy = UrlPolicy(allowed_hosts=frozenset({"images.example.com"}), allowed_ports=frozenset({443}))
    assert policy.check_url("https://images.example.com/a.img") == ("https", "images.example.com", 443)
    with pytest.raises(UrlRefused, match="the host 'other.example.com' is not in the list of allowed hosts"):
        policy.check_url("https://other.example.com/a.img")
    with pytest.raises(UrlRefused, match=r"the port 80 is not allowed \(allowed: 443\)"):
        policy.check_url("http://images.example.com/a.img")


def test_literal_check_does_not_resolve_names():
    assert DEFAULT.check_url("http://no-such-host.invalid/x") == ("http", "no-such-host.invalid", 80)


def test_resolution_checks_the_resolved_address():
    with pytest.raises(UrlRefused, match="loopback"):
        DEFAULT.resolve("localhost", 80)
    # Numeric forms that only the resolver understands are caught after resolution.
    with pytest.raises(UrlRefused, match="loopback"):
        DEFAULT.resolve("2130706433", 80)
    with pytest.raises(UnresolvableHost, match="The host name 'x.invalid' could not be resolved"):
        DEFAULT.resolve("x.invalid", 80)


def test_policy_from_settings_reads_the_url_settings(settings):
    settings.URL_ALLOWED_SCHEMES = ["https"]
    settings.URL_ALLOWED_HOSTS = ["Images.Example.com"]
    settings.URL_ALLOWED_PORTS = [8443]
    settings.URL_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    policy = UrlPolicy.from_settings()
    assert policy.allowed_schemes == {"https"}
    assert policy.allowed_hosts == {"images.example.com"}
    assert policy.allowed_ports == {8443}
    assert policy.check_address("10.9.9.9") == ipaddress.ip_address("10.9.9.9")
