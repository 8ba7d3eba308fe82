"""The client behind a reverse proxy (``serve --trusted-proxy``): X-Forwarded-For, believed
only from trusted proxies, for the rate limit and the access log."""

import http.client
import json

import pytest

from conftest import serving
from vlmcodec.errors import ConfigError
from vlmcodec.runtime.forwarded import client_address, plain_address, trusted_networks

PROXIES = trusted_networks(["10.0.0.0/8", "192.168.1.7", "fd00::/8"])


@pytest.mark.parametrize("peer, header, expected", [
    # a direct client, or one behind a proxy nobody trusts: the connection's address, header or not
    ("203.0.113.9", ["198.51.100.1"], ("203.0.113.9", False)),
    ("10.1.2.3", [], ("10.1.2.3", False)),
    # a trusted proxy: the rightmost address that is not a trusted proxy
    ("10.1.2.3", ["198.51.100.1"], ("198.51.100.1", True)),
    ("10.1.2.3", ["1.1.1.1, 198.51.100.1"], ("198.51.100.1", True)),     # 1.1.1.1: written by the client
    ("10.1.2.3", ["198.51.100.1, 192.168.1.7"], ("198.51.100.1", True)),  # two proxies deep
    ("10.1.2.3", ["1.1.1.1", "198.51.100.1, 10.9.9.9"], ("198.51.100.1", True)),  # the header twice
    ("10.1.2.3", ["10.5.5.5, 192.168.1.7"], ("10.5.5.5", True)),     # only proxies: the farthest
    ("10.1.2.3", ["198.51.100.1:5123"], ("198.51.100.1", True)),     # a port after IPv4
    ("10.1.2.3", ["[2001:db8::1]:443"], ("2001:db8::1", True)),
    ("fd00::5", ["2001:db8::1"], ("2001:db8::1", True)),
    ("::ffff:10.1.2.3", ["198.51.100.1"], ("198.51.100.1", True)),  # a dual-stack socket's IPv4
    ("::ffff:10.1.2.3", ["::ffff:198.51.100.1"], ("198.51.100.1", True)),  # named as IPv4 (one bucket)
    ("::ffff:10.1.2.3", [], ("10.1.2.3", False)),
    ("::ffff:198.51.100.9", ["198.51.100.1"], ("198.51.100.9", False)),  # not a proxy: named as IPv4
    # a list that does not parse on the way is not believed
    ("10.1.2.3", ["unknown"], ("10.1.2.3", False)),
    ("10.1.2.3", ["198.51.100.1, "], ("10.1.2.3", False)),
    ("10.1.2.3", ["garbage, 198.51.100.1"], ("198.51.100.1", True)),  # left of the client: never read
])
def test_the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy(peer, header, expected):
    assert client_address(peer, header, PROXIES) == expected


def test_without_trusted_proxies_the_header_is_never_read():
    assert client_address("10.1.2.3", ["198.51.100.1"], ()) == ("10.1.2.3", False)


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "proxy.local", "", "1.2.3"])
def test_a_malformed_trusted_proxy_is_refused(bad):
    with pytest.raises(ConfigError, match="trusted proxy must be an IP address or network"):
        trusted_networks([bad])


def _encode_status(server, forwarded_for: str | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    try:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        conn.request("POST", "/encode?quality=50&width=8&height=8", body=bytes(8 * 8 * 3), headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


class _Clock:
    now = 100.0

    def __call__(self):
        return self.now


def test_the_rate_limit_holds_each_forwarded_client_to_its_own_bucket(tiny_model_path):
    with serving(tiny_model_path, _Clock(), rate_limit=0.01, rate_burst=1, trusted_proxies=["127.0.0.1"]) as server:
        assert _encode_status(server, "198.51.100.1") == 200
        assert _encode_status(server, "198.51.100.2") == 200  # another client behind the proxy
        assert _encode_status(server, "198.51.100.1") == 429
        assert _encode_status(server, "6.6.6.6, 198.51.100.2") == 429  # a spoofed entry changes nothing
        assert _encode_status(server, None) == 200  # the proxy's own request: its address
    # a server that trusts no proxy: every client on this address shares its bucket
    with serving(tiny_model_path, _Clock(), rate_limit=0.01, rate_burst=1) as server:
        assert _encode_status(server, "198.51.100.1") == 200
        assert _encode_status(server, "198.51.100.2") == 429


def test_the_access_log_names_the_forwarded_client_and_its_proxy(tiny_model_path, capsys):
    with serving(tiny_model_path, quiet=False, log_format="json", trusted_proxies=["127.0.0.0/8"]) as server:
        assert _encode_status(server, "198.51.100.1") == 200
        assert _encode_status(server, None) == 200
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert (records[0]["remote"], records[0]["proxy"]) == ("198.51.100.1", "127.0.0.1")
    assert records[1]["remote"] == "127.0.0.1" and "proxy" not in records[1]
    with serving(tiny_model_path, quiet=False, trusted_proxies=["127.0.0.1"]) as server:
        assert _encode_status(server, "198.51.100.1") == 200
    assert capsys.readouterr().err.startswith("198.51.100.1 - - [")
    with pytest.raises(ConfigError, match="trusted proxy"):
        with serving(tiny_model_path, trusted_proxies=["localhost"]):
            pass


def test_cli_serve_trusted_proxy_is_checked(tiny_model_path, capsys):
    from vlmcodec.cli import main

    assert main(["serve", "--model", str(tiny_model_path), "--port", "0", "--trusted-proxy", "10.0.0.0/40"]) == 2
    assert "trusted proxy must be an IP address or network" in capsys.readouterr().err


def test_trusting_every_address_is_warned_of():
    from vlmcodec.runtime.forwarded import trust_warning

    assert trust_warning(PROXIES) is None and trust_warning(()) is None
    for everyone in ("0.0.0.0/0", "::/0"):
        warning = trust_warning(trusted_networks(["10.0.0.0/8", everyone]))
        assert everyone in warning and "10.0.0.0/8" not in warning and "rate-limit" in warning


def test_a_trusted_proxy_given_as_an_ipv4_mapped_network_is_trusted():
    """(It was mapped to IPv4 first and so never in an IPv6 network.)"""
    networks = trusted_networks(["::ffff:10.0.0.0/104"])
    assert client_address("::ffff:10.1.2.3", ["198.51.100.1"], networks) == ("198.51.100.1", True)
    assert client_address("10.1.2.3", ["198.51.100.1"], networks) == ("10.1.2.3", False)


@pytest.mark.parametrize("peer, expected", [
    ("::ffff:10.1.2.3", "10.1.2.3"), ("::FFFF:10.1.2.3", "10.1.2.3"), ("10.1.2.3", "10.1.2.3"),
    ("::1", "::1"), ("2001:db8::1", "2001:db8::1"), ("", ""), ("not an address", "not an address"),
])
def test_an_ipv4_mapped_peer_is_named_by_its_ipv4_address(peer, expected):
    assert plain_address(peer) == expected
