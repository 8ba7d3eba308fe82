"""`vlmcodec serve`'s HTTP side at the edges its other tests left open (found by mutation testing):
body limits taken at their exact bound, framing that agrees, bodies that are dropped and never
read as requests, query options given twice or empty, the 429's and 401's headers, and /metrics'
samples against the counts they show."""

import json
import socket
import time

import pytest

from vlmcodec import Codec
from vlmcodec.errors import ConfigError
from vlmcodec.runtime import Engine, running_server
from vlmcodec.runtime.metrics import prometheus_text

from conftest import serving, smooth_image
from test_http_protocol import _exchange, _statuses
from test_rate_limit import _Clock
from test_server import _png, _request

# a request hidden in another's body: answered (404) only if that body was read as a request
HIDDEN_404 = b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
LAST = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


# -- where a body ends, and bodies that are dropped -------------------------------------------
def test_content_lengths_that_differ_only_in_leading_zeros_agree(tiny_model_path):
    """Several Content-Length headers are compared as numbers: "03" and "3" agree (the body is
    read and dropped, the connection kept), "3" and "4" do not."""
    with serving(tiny_model_path) as server:
        raw = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 03\r\nContent-Length: 3\r\n\r\nabc" + LAST
        assert _statuses(_exchange(server.server_port, raw)) == [200, 200]
        raw = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        answer = _exchange(server.server_port, raw)
        assert _statuses(answer) == [400] and b"disagree" in answer


def test_the_body_of_a_refused_method_or_token_is_dropped_not_read_as_a_request(tiny_model_path):
    """A PUT (405) and a POST without its token (401) have their bodies read and dropped: the
    connection's next request is the client's next one, never what the body held."""
    with serving(tiny_model_path, auth_token="s3cret") as server:
        for head, status in ((b"PUT /encode HTTP/1.1\r\n", 405), (b"POST /encode HTTP/1.1\r\n", 401)):
            raw = head + b"Host: x\r\nContent-Length: %d\r\n\r\n" % len(HIDDEN_404) + HIDDEN_404 + LAST
            answer = _exchange(server.server_port, raw)
            assert _statuses(answer) == [status, 200], (head, answer[:400])


def test_a_get_body_over_max_body_closes_the_connection_unread(tiny_model_path):
    """A body over max_body on a request that takes none is not read (it could be any size): the
    answer says "Connection: close", and what the client sent after is never served."""
    with serving(tiny_model_path, max_body=1000) as server:
        raw = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + HIDDEN_404
        answer = _exchange(server.server_port, raw)
        assert _statuses(answer) == [200] and b"Connection: close" in answer


def test_a_refused_expect_100_request_closes_its_connection(tiny_model_path):
    """A client waiting for "100 Continue" that is refused (401) never sends its body: the
    connection ends after the answer, and the answer says so."""
    head = b"POST /encode HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
    with serving(tiny_model_path, auth_token="s3cret") as server:
        answer = _exchange(server.server_port, head)
    assert _statuses(answer) == [401] and b"Connection: close" in answer.split(b"\r\n\r\n", 1)[0]


def test_a_body_of_exactly_max_body_bytes_is_taken(tiny_model_path):
    """max_body is the most a body may have, that many bytes included: with Content-Length and
    chunked alike, a body of exactly max_body reaches the decoder (400: not a stream), one byte
    more is 413."""
    with serving(tiny_model_path, max_body=64) as server:
        for n, status in ((64, 400), (65, 413)):
            got, _, payload = _request(server, "POST", "/decode", b"x" * n)
            assert got == status, (n, payload)
        for n, status in ((64, 400), (65, 413)):
            raw = (b"POST /decode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   + b"%x\r\n" % n + b"x" * n + b"\r\n0\r\n\r\n")
            assert _statuses(_exchange(server.server_port, raw)) == [status], n


def test_a_body_one_byte_short_is_refused_as_short(tiny_model_path):
    """A body that ends one byte before its Content-Length is refused for that (400, naming both
    lengths), not handed on truncated."""
    with serving(tiny_model_path) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
            sock.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n" + b"x" * 9)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.makefile("rb").read()
    assert _statuses(answer) == [400] and b"body ended after 9 of 10 bytes" in answer


def test_a_content_length_of_non_ascii_digits_is_refused(tiny_model_path):
    """"²" is a digit to str.isdigit() but no length to int() (nor to a proxy): refused and the
    connection closed, never a GET whose body is then read as the next request."""
    with serving(tiny_model_path) as server:
        raw = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n" + HIDDEN_404
        answer = _exchange(server.server_port, raw)
    assert _statuses(answer) == [400] and b"bad Content-Length" in answer


def test_a_chunked_body_with_bare_line_feeds_is_read(tiny_model_path, rng):
    """Chunk lines ended by a bare LF (as by some clients) are taken as CRLF ones are."""
    img = smooth_image(rng, 24, 32)
    png = _png(img)
    raw = (b"POST /encode?quality=50 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           + b"%x\n" % len(png) + png + b"\n0\n\n")
    with serving(tiny_model_path) as server:
        answer = _exchange(server.server_port, raw, 10)
    assert _statuses(answer) == [200] and answer.split(b"\r\n\r\n", 1)[1] == Codec(tiny_model_path).encode(img, 50)


def test_a_pipelined_request_is_not_taken_for_a_client_that_hung_up(tiny_model_path, rng):
    """While a request waits for its result, data on its connection is the client's next request
    (pipelined), not its end: the first is answered, then the next."""
    img = smooth_image(rng, 24, 32)
    png = _png(img)
    engine = Engine(Codec(tiny_model_path), block=False, max_batch=8, max_delay_ms=300)  # a lone request waits
    with running_server(engine) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(b"POST /encode?quality=50 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(png) + png)
            time.sleep(0.1)  # (the first waits in the engine: the next arrives on its socket meanwhile)
            sock.sendall(LAST)
            answer = sock.makefile("rb").read()
        assert _statuses(answer) == [200, 200] and server.abandoned == 0


# -- query options ------------------------------------------------------------------------------
def test_a_parameter_given_twice_takes_its_last_value_and_an_empty_one_its_meaning(tiny_model_path, rng):
    """?quality=5&quality=50 codes at 50 (the last); an empty short_side= is no short side, an
    empty quality= is refused (not the server's default)."""
    img = smooth_image(rng, 32, 48)
    codec = Codec(tiny_model_path)
    with serving(tiny_model_path) as server:
        status, _, data = _request(server, "POST", "/encode?quality=5&quality=50", _png(img))
        assert status == 200 and data == codec.encode(img, 50)
        status, _, data = _request(server, "POST", "/encode?quality=50&short_side=", _png(img))
        assert status == 200 and data == codec.encode(img, 50)
        status, _, payload = _request(server, "POST", "/encode?quality=", _png(img))
        assert status == 400 and b"quality must be a number" in payload


@pytest.mark.parametrize("timeout", ["0", "nan"])
def test_a_timeout_of_zero_or_nan_is_refused(tiny_model_path, rng, timeout):
    with serving(tiny_model_path) as server:
        status, _, payload = _request(server, "POST", f"/encode?quality=50&timeout={timeout}",
                                      _png(smooth_image(rng, 16, 16)))
    assert status == 400 and b"timeout must be > 0" in payload


def test_a_refined_encode_of_exactly_max_refine_pixels_is_taken(tiny_model_path, rng):
    """max_refine_pixels is the most a refined encode may code, that many included."""
    img = smooth_image(rng, 32, 48)
    with serving(tiny_model_path, max_refine=1, max_refine_pixels=32 * 48) as server:
        status, _, data = _request(server, "POST", "/encode?quality=50&refine=1", _png(img))
        assert status == 200 and data == Codec(tiny_model_path).encode(img, 50, refine=1)
    with serving(tiny_model_path, max_refine=1, max_refine_pixels=32 * 48 - 1) as server:
        assert _request(server, "POST", "/encode?quality=50&refine=1", _png(img))[0] == 413


def test_a_request_id_with_a_control_character_is_not_echoed(tiny_model_path):
    with serving(tiny_model_path) as server:
        raw = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\x7fb\r\nConnection: close\r\n\r\n"
        answer = _exchange(server.server_port, raw)
    assert _statuses(answer) == [200] and b"X-Request-Id" not in answer


def test_a_request_id_of_128_characters_is_echoed(tiny_model_path):
    with serving(tiny_model_path) as server:
        status, headers, _ = _request(server, "GET", "/health", headers={"X-Request-Id": "r" * 128})
    assert status == 200 and headers["X-Request-Id"] == "r" * 128


def test_the_answers_by_status_are_in_the_order_of_the_codes(tiny_model_path):
    with serving(tiny_model_path) as server:
        assert _request(server, "GET", "/nowhere")[0] == 404
        assert _request(server, "GET", "/health")[0] == 200
        assert list(server.response_counts()) == ["200", "404"]


# -- the answers' headers -----------------------------------------------------------------------
def test_a_429s_retry_after_rounds_its_wait_up(tiny_model_path):
    """Retry-After is whole seconds, rounded up (2.5 s: 3), so that a client waiting it is
    admitted; the JSON has the exact wait."""
    with serving(tiny_model_path, _Clock(), rate_limit=0.4, rate_burst=1) as server:
        assert _request(server, "POST", "/encode", b"junk")[0] == 400  # admitted (and refused by the reader)
        status, headers, payload = _request(server, "POST", "/encode", b"junk")
    assert status == 429 and headers["Retry-After"] == "3" and b'"retry_after_s": 2.5' in payload


def test_a_401_names_the_bearer_scheme(tiny_model_path):
    with serving(tiny_model_path, auth_token="s3cret") as server:
        status, headers, payload = _request(server, "GET", "/stats")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and b"AuthenticationError" in payload


def test_stats_tells_open_connections_from_refused_ones(tiny_model_path):
    """/stats' connections (open now: the request's own) and connections_refused (none yet) are
    each their own count."""
    with serving(tiny_model_path) as server:
        status, _, payload = _request(server, "GET", "/stats")
    stats = json.loads(payload)
    assert status == 200 and (stats["connections"], stats["connections_refused"]) == (1, 0)


def test_an_answer_given_as_the_server_starts_closing_ends_its_connection(tiny_model_path, monkeypatch):
    """server_close beginning just after a keep-alive request was answered (the answer itself
    not yet told to close): the connection still ends there, its thread does not wait for a next
    request (server_close would wait its drain time for it)."""
    from vlmcodec.runtime.http_handler import RequestHandler

    real = RequestHandler._send

    def send_then_close(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.server._closing = True  # (as server_close sets it, between the answer and the request's end)

    monkeypatch.setattr(RequestHandler, "_send", send_then_close)
    with serving(tiny_model_path, idle_timeout=20) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.makefile("rb").read()  # to the end: the server closes (a timeout otherwise)
    assert _statuses(answer) == [200]


# -- clients' own options -----------------------------------------------------------------------
def test_clients_own_options_need_tokens_that_name_them(tiny_model_path):
    """A rate limit, priority or refine cap for a client is refused on a server without tokens:
    no request could ever carry that client's name."""
    for option in ({"client_limits": {"app": (1.0, 1)}}, {"client_priorities": {"app": 1}},
                   {"client_max_refine": {"app": 1}}):
        with pytest.raises(ConfigError, match="whom no token names"):
            with serving(tiny_model_path, **option):
                pass


# -- /metrics -----------------------------------------------------------------------------------
class _Engine:
    """What prometheus_text reads of an engine, each count different, so that a sample showing
    the wrong count is seen."""

    class codec:
        fingerprint = bytes.fromhex("0123456789abcdef")

    stats = {"ok": 11, "failed": 3, "batches": 5, "batched_items": 9, "refined": 2}
    in_flight = 4

    def latency(self):
        q = {"count": 7, "p50_s": 0.1, "p90_s": 0.2, "p99_s": 0.3, "max_s": 0.4}
        return {"encode": q, "decode": None, "refine": None}

    def latency_histogram(self):
        empty = {"sum": 0.0, "count": 0, "buckets": [(0.5, 0), (float("inf"), 0)]}
        return {"encode": {"sum": 1.25, "count": 11, "buckets": [(0.5, 8), (float("inf"), 11)]},
                "decode": empty, "refine": empty}


class _Server:
    connections, connections_refused, abandoned = 6, 1, 8

    def rate_limited_counts(self):
        return 12, {"app": 12}

    def response_counts(self):
        return {"200": 20, "429": 12}

    def client_counts(self):
        return {"app": 32}


def _samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_samples_show_the_counts_they_name():
    engine = _Engine()
    text = prometheus_text({engine.codec.fingerprint: engine}, _Server())
    model = 'model="0123456789abcdef"'
    assert _samples(text) == {
        "vlmcodec_http_connections": 6, "vlmcodec_http_connections_refused_total": 1,
        "vlmcodec_http_rate_limited_total": 12, "vlmcodec_http_abandoned_total": 8,
        'vlmcodec_http_responses_total{code="200"}': 20, 'vlmcodec_http_responses_total{code="429"}': 12,
        'vlmcodec_http_rate_limited_by_client_total{client="app"}': 12,
        'vlmcodec_http_requests_by_client_total{client="app"}': 32,
        f'vlmcodec_requests_total{{{model},outcome="ok"}}': 11,
        f'vlmcodec_requests_total{{{model},outcome="failed"}}': 3,
        f"vlmcodec_batches_total{{{model}}}": 5, f"vlmcodec_batched_items_total{{{model}}}": 9,
        f"vlmcodec_refined_total{{{model}}}": 2, f"vlmcodec_in_flight{{{model}}}": 4,
        f'vlmcodec_latency_seconds{{{model},kind="encode",quantile="0.5"}}': 0.1,
        f'vlmcodec_latency_seconds{{{model},kind="encode",quantile="0.9"}}': 0.2,
        f'vlmcodec_latency_seconds{{{model},kind="encode",quantile="0.99"}}': 0.3,
        **{f'vlmcodec_latency_seconds_{s}{{{model},kind="{k}"}}': v
           for k, (total, n) in {"encode": (1.25, 11), "decode": (0, 0), "refine": (0, 0)}.items()
           for s, v in (("sum", total), ("count", n))},
        **{f'vlmcodec_request_duration_seconds_{s}{{{model},kind="{k}"}}': v
           for k, (total, n) in {"encode": (1.25, 11), "decode": (0, 0), "refine": (0, 0)}.items()
           for s, v in (("sum", total), ("count", n))},
        **{f'vlmcodec_request_duration_seconds_bucket{{{model},kind="{k}",le="{le}"}}': n
           for k, counts in {"encode": (8, 11), "decode": (0, 0), "refine": (0, 0)}.items()
           for le, n in zip(("0.5", "+Inf"), counts)},
    }
    types = dict(line.split(" ")[2:4] for line in text.splitlines() if line.startswith("# TYPE"))
    assert types["vlmcodec_http_connections"] == types["vlmcodec_in_flight"] == "gauge"
    assert types["vlmcodec_http_connections_refused_total"] == types["vlmcodec_requests_total"] == "counter"
