"""Per-client rate limits (``serve --rate-limit``): token buckets, the server's 429, the client's retry."""

import http.client
import json

import pytest

from vlmcodec.errors import ConfigError
from vlmcodec.runtime import RateLimited, RemoteCodec
from vlmcodec.runtime import client as client_module
from vlmcodec.runtime.rate_limit import RateLimiter, check_rate

from conftest import serving, smooth_image


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_bucket_admits_its_burst_then_one_per_interval_and_says_how_long_to_wait():
    clock = _Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)  # 3 at once, then one every 0.5 s
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("a") == pytest.approx(0.5)
    assert limiter.wait("b") == 0.0  # another client has its own bucket
    clock.now += 0.2
    assert limiter.wait("a") == pytest.approx(0.3)  # a refused request takes nothing from the bucket
    clock.now += 0.3
    assert limiter.wait("a") == 0.0 and limiter.wait("a") == pytest.approx(0.5)
    clock.now += 60  # refills up to the burst, no further
    assert [limiter.wait("a") for _ in range(4)][-1] == pytest.approx(0.5)


def test_a_request_may_count_as_several_at_most_the_burst():
    clock = _Clock()
    limiter = RateLimiter(1.0, 3, clock=clock)
    assert limiter.wait("a", cost=2.0) == 0.0  # 1 left
    assert limiter.wait("a", cost=2.0) == pytest.approx(1.0)  # refused: needs one more
    assert limiter.wait("a") == 0.0  # a plain request still fits
    clock.now += 3.0  # full again (3)
    assert limiter.wait("a", cost=50.0) == 0.0  # counts as the burst: admitted when the bucket is full
    assert limiter.wait("a", cost=0.2) == pytest.approx(1.0)  # and never as less than one


def test_a_refined_encode_counts_as_its_refine_cost_under_the_rate_limit(tiny_model_path, rng):
    clock = _Clock()
    img = smooth_image(rng, 32, 48)
    with serving(tiny_model_path, clock, rate_limit=1.0, rate_burst=3, max_refine=2, refine_cost=0.5) as server:
        with RemoteCodec(server.url, retries=0) as remote:
            remote.encode(img, 50, refine=2)  # counts as 2 of the 3
            with pytest.raises(RateLimited, match=r"this one counts as 2: refine × --refine-cost") as refused:
                remote.encode(img, 50, refine=2)
            assert refused.value.retry_after_s == pytest.approx(1.0)
            remote.encode(img, 50)  # a plain one counts as 1 and still fits
            with pytest.raises(RateLimited):
                remote.encode(img, 50)
    for bad in (-0.1, 101, True, "1"):
        with pytest.raises(ConfigError, match="refine_cost must be a number"):
            with serving(tiny_model_path, refine_cost=bad):
                pass


def test_idle_clients_are_forgotten_beyond_the_bound():
    """Past max_clients the client idle longest is forgotten, refilled or not: the table stays
    bounded (it grew without bound when no bucket had refilled, each request scanning it all)."""
    clock = _Clock()
    limiter = RateLimiter(0.1, 1, clock=clock, max_clients=3)  # 10 s to refill: none refills here
    for key in "abc":
        assert limiter.wait(key) == 0.0
        clock.now += 0.01
    assert limiter.wait("a") > 0  # refused, and now the most recently seen
    assert limiter.wait("d") == 0.0
    assert limiter.clients == 3
    assert limiter.wait("b") == 0.0  # b, idle longest, was forgotten: a fresh bucket
    assert limiter.wait("a") > 0 and limiter.wait("d") > 0  # the recent ones are still limited
    for i in range(5000):
        limiter.wait(f"10.0.{i // 256}.{i % 256}")
    assert limiter.clients == 3


@pytest.mark.parametrize("rate, burst, message", [
    (0, None, "at least 1e-06"), (-1, None, "at least 1e-06"), (float("nan"), None, "at least 1e-06"),
    (1e-320, None, "at least 1e-06"), ("x", None, "a number"),
    (1.0, 0, "whole number, at least 1"), (1.0, 1.5, "whole number, at least 1"), (None, 3, "needs a rate limit"),
])
def test_bad_limits_are_refused(rate, burst, message):
    with pytest.raises(ConfigError, match=message):
        check_rate(rate, burst)


def test_default_burst_is_one_seconds_worth():
    assert check_rate(None, None) is None
    assert check_rate(0.2, None) == (0.2, 1) and check_rate(7.5, None) == (7.5, 8)


def test_server_answers_429_per_client_and_counts_it(tiny_model_path, rng, monkeypatch):
    """Client app over its limit gets 429 with Retry-After and its JSON wait; client batch is not
    held back; /stats and /metrics (not limited themselves) count the refusals; RemoteCodec raises
    RateLimited, or waits what the server asked and retries."""
    clock = _Clock()
    img = smooth_image(rng, 32, 48)
    with serving(tiny_model_path, clock, auth_token={"app": "tok-a", "batch": "tok-b"}, rate_limit=0.5,
                  rate_burst=2) as server:
        with RemoteCodec(server.url, token="tok-a", retries=0) as app, RemoteCodec(server.url, token="tok-b") as batch:
            data = app.encode(img, quality=50)
            assert app.decode(data).shape == img.shape
            with pytest.raises(RateLimited, match=r"this client's rate limit of 0.5 requests/s \(burst 2\)") as refused:
                app.encode(img, quality=50)
            assert refused.value.retry_after_s == pytest.approx(2.0)
            assert batch.encode(img, quality=50) == data  # its own bucket
            stats = app.stats()  # not a coding request: never limited
            assert (stats["rate_limited"], stats["rate_limited_by_client"]) == (1, {"app": 1})

            waits = []
            monkeypatch.setattr(client_module, "_sleep", lambda s: (waits.append(s), setattr(clock, "now", clock.now + s)))
            patient = RemoteCodec(server.url, token="tok-a", retries=1)
            assert patient.encode(img, quality=50) == data and waits == [pytest.approx(2.0)]
            patient.close()

        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        conn.request("POST", "/encode?quality=50", body=b"x" * 1000, headers={"Authorization": "Bearer tok-a"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        assert resp.status == 429 and resp.getheader("Retry-After") == "2" and answer["type"] == "RateLimited"
        assert answer["retry_after_s"] == pytest.approx(2.0)
        conn.request("GET", "/metrics", headers={"Authorization": "Bearer tok-b"})  # the same connection: kept alive
        metrics = conn.getresponse().read().decode()
        conn.close()
        assert "vlmcodec_http_rate_limited_total 3" in metrics  # app's refused try, the patient one's first, this
        assert 'vlmcodec_http_rate_limited_by_client_total{client="app"} 3' in metrics


def test_without_tokens_the_limit_is_per_address(tiny_model_path, rng):
    with serving(tiny_model_path, rate_limit=0.01, rate_burst=1) as server:
        with RemoteCodec(server.url, retries=0) as one, RemoteCodec(server.url, retries=0) as other:
            one.encode(smooth_image(rng, 32, 32), quality=50)
            with pytest.raises(RateLimited):  # another connection from the same address: the same client
                other.encode(smooth_image(rng, 32, 32), quality=50)
        assert server.rate_limited_counts() == (1, {})


def test_cli_serve_checks_the_rate_options(tiny_model_path, capsys):
    from vlmcodec.cli import main

    model = ["--model", str(tiny_model_path), "--port", "0"]
    assert main(["serve", *model, "--rate-burst", "3"]) == 2
    assert "needs a rate limit" in capsys.readouterr().err
    assert main(["serve", *model, "--rate-limit", "-2"]) == 2
    assert "of at least 1e-06, got -2.0" in capsys.readouterr().err
    assert main(["serve", *model, "--max-refine", "2", "--refine-cost", "0.5"]) == 2
    assert "--refine-cost needs a rate limit" in capsys.readouterr().err
    assert main(["serve", *model, "--rate-limit", "1", "--refine-cost", "-1"]) == 2
    assert "refine_cost must be a number in [0, 100]" in capsys.readouterr().err


def test_a_client_of_its_own_limit_is_held_to_it_and_one_of_none_to_nothing(tiny_model_path, rng):
    """client_limits replace the server's limit for the clients they name (None: unlimited);
    the others keep the server's; a limit for a client no token names is refused."""
    with pytest.raises(ConfigError, match="whom no token names"):
        with serving(tiny_model_path, auth_token={"a": "tok-a"}, client_limits={"b": (1, 1)}):
            pass
    img = smooth_image(rng, 32, 32)
    with serving(tiny_model_path, _Clock(), auth_token={"slow": "tok-s", "trusted": "tok-t", "other": "tok-o"},
                  rate_limit=0.01, rate_burst=2, client_limits={"slow": (0.01, 1), "trusted": None}) as server:
        with RemoteCodec(server.url, token="tok-s", retries=0) as slow, \
                RemoteCodec(server.url, token="tok-t", retries=0) as trusted, \
                RemoteCodec(server.url, token="tok-o", retries=0) as other:
            slow.encode(img, quality=50)
            with pytest.raises(RateLimited, match=r"limit of 0.01 requests/s \(burst 1\)"):
                slow.encode(img, quality=50)  # its own burst of 1
            for _ in range(4):
                trusted.encode(img, quality=50)
            other.encode(img, quality=50)
            other.encode(img, quality=50)
            with pytest.raises(RateLimited, match=r"\(burst 2\)"):
                other.encode(img, quality=50)  # the server's burst of 2
        assert server.rate_limited_counts() == (2, {"slow": 1, "other": 1})


def test_a_server_without_a_limit_of_its_own_limits_only_the_named_clients(tiny_model_path, rng):
    img = smooth_image(rng, 32, 32)
    limits = {"slow": (0.01, 1)}
    with serving(tiny_model_path, auth_token={"slow": "tok-s", "free": "tok-f"}, client_limits=limits) as server:
        with RemoteCodec(server.url, token="tok-s", retries=0) as slow, \
                RemoteCodec(server.url, token="tok-f", retries=0) as free:
            slow.encode(img, quality=50)
            with pytest.raises(RateLimited):
                slow.encode(img, quality=50)
            for _ in range(3):
                free.encode(img, quality=50)


def test_a_reload_changes_a_clients_limit_with_its_line(tiny_model_path, rng, tmp_path, capsys):
    import argparse

    from vlmcodec.cli.serve import _reload_security, _serve_security

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("app tok-a rate=0.01 burst=1\n")
    tokens.chmod(0o600)  # (readable by others: a warning)
    args = argparse.Namespace(tls_cert=None, tls_key=None, tls_client_ca=None, auth_token_file=str(tokens))
    _, token_file = _serve_security(args)
    token, limits = token_file.tokens, token_file.limits
    img = smooth_image(rng, 32, 32)
    with serving(tiny_model_path, auth_token=token, client_limits=limits) as server:
        with RemoteCodec(server.url, token="tok-a", retries=0) as app:
            app.encode(img, quality=50)
            with pytest.raises(RateLimited):
                app.encode(img, quality=50)
            tokens.write_text("app tok-a rate=fast\n")  # refused: the limit in force stays
            _reload_security(server, args)
            assert "reload refused" in capsys.readouterr().err
            with pytest.raises(RateLimited):
                app.encode(img, quality=50)
            tokens.write_text("app tok-a rate=unlimited\n")
            _reload_security(server, args)
            assert "reloaded" in capsys.readouterr().err
            for _ in range(3):
                app.encode(img, quality=50)


@pytest.mark.parametrize("bad", [0, 2.5, True, None])
def test_max_clients_is_checked(bad):
    with pytest.raises(ConfigError, match="max_clients must be a whole number, at least 1"):
        RateLimiter(1.0, 1, max_clients=bad)
