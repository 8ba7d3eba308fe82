"""``GET /metrics``: the server's engines and connections in Prometheus' text exposition format."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine import LATENCY_WINDOW, Engine

if TYPE_CHECKING:
    from .server import CodecServer


def prometheus_text(engine: Engine | dict[bytes, Engine], server: CodecServer | None = None) -> str:
    """The engines' counters and latency quantiles (each series labelled with its model's
    fingerprint), and ``server``'s connections, in Prometheus' text exposition format."""
    engines = engine if isinstance(engine, dict) else {engine.codec.fingerprint: engine}
    lines = []
    if server is not None:
        lines += [
            "# HELP vlmcodec_http_connections Connections open now.",
            "# TYPE vlmcodec_http_connections gauge",
            f"vlmcodec_http_connections {server.connections}",
            "# HELP vlmcodec_http_connections_refused_total Connections answered 503 for a connection bound "
            "(max_connections, max_connections_per_address).",
            "# TYPE vlmcodec_http_connections_refused_total counter",
            f"vlmcodec_http_connections_refused_total {server.connections_refused}",
        ]
        limited, limited_by_client = server.rate_limited_counts()
        lines += ["# HELP vlmcodec_http_rate_limited_total Coding requests answered 429 for the per-client rate limit.",
                  "# TYPE vlmcodec_http_rate_limited_total counter",
                  f"vlmcodec_http_rate_limited_total {limited}",
                  "# HELP vlmcodec_http_abandoned_total Requests whose client hung up while they waited (no answer "
                  "sent; cancelled if not begun).",
                  "# TYPE vlmcodec_http_abandoned_total counter",
                  f"vlmcodec_http_abandoned_total {server.abandoned}",
                  "# HELP vlmcodec_http_responses_total Answers sent, by HTTP status (every endpoint, /metrics "
                  "included; the connection bound's 503s too).",
                  "# TYPE vlmcodec_http_responses_total counter"]
        lines += [f'vlmcodec_http_responses_total{{code="{code}"}} {n}' for code, n in server.response_counts().items()]
        if limited_by_client:
            lines += ["# HELP vlmcodec_http_rate_limited_by_client_total Requests answered 429, by the client their "
                      "token names.",
                      "# TYPE vlmcodec_http_rate_limited_by_client_total counter"]
            lines += [f'vlmcodec_http_rate_limited_by_client_total{{client="{name}"}} {n}'
                      for name, n in limited_by_client.items()]
        clients = server.client_counts()
        if clients:  # a server with tokens: who sends what
            lines += ["# HELP vlmcodec_http_requests_by_client_total Requests whose token was accepted (answered or refused after: 429, 400...), by the client it names.",
                      "# TYPE vlmcodec_http_requests_by_client_total counter"]
            lines += [f'vlmcodec_http_requests_by_client_total{{client="{name}"}} {n}' for name, n in clients.items()]
    families = [
        ("vlmcodec_requests_total", "counter", "Requests finished, by outcome.",
         lambda e, st: [('outcome="ok"', st["ok"]), ('outcome="failed"', st["failed"])]),
        ("vlmcodec_batches_total", "counter", "Network batches run.", lambda e, st: [("", st["batches"])]),
        ("vlmcodec_batched_items_total", "counter", "Requests run in network batches.",
         lambda e, st: [("", st["batched_items"])]),
        ("vlmcodec_refined_total", "counter", "Encodes with latent refinement finished.",
         lambda e, st: [("", st["refined"])]),
        ("vlmcodec_in_flight", "gauge", "Requests admitted and not finished.", lambda e, st: [("", e.in_flight)]),
    ]
    snapshot = {fp: (e, dict(e.stats), e.latency()) for fp, e in engines.items()}
    for name, kind, text, values in families:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for fp, (e, stats, _) in snapshot.items():
            for labels, value in values(e, stats):
                lines.append(f'{name}{{model="{fp.hex()}"{"," + labels if labels else ""}}} {value}')
    histograms = {fp: e.latency_histogram() for fp, e in engines.items()}
    # a summary as Prometheus' clients make one: quantiles over a sliding window (the last
    # LATENCY_WINDOW requests), _count and _sum over every request since the start
    lines += [(f"# HELP vlmcodec_latency_seconds Submit-to-result time of successful requests (quantiles: the last "
               f"{LATENCY_WINDOW})."),
              "# TYPE vlmcodec_latency_seconds summary"]
    for fp, (_, _, latency) in snapshot.items():
        model = f'model="{fp.hex()}"'
        for kind, q in latency.items():
            for key, quantile in (("p50_s", "0.5"), ("p90_s", "0.9"), ("p99_s", "0.99")):
                if q:
                    lines.append(f'vlmcodec_latency_seconds{{{model},kind="{kind}",quantile="{quantile}"}} {q[key]:.6f}')
            h = histograms[fp][kind]
            lines.append(f'vlmcodec_latency_seconds_sum{{{model},kind="{kind}"}} {h["sum"]:.6f}')
            lines.append(f'vlmcodec_latency_seconds_count{{{model},kind="{kind}"}} {h["count"]}')
    # the same times as a histogram: buckets add up across servers (histogram_quantile over a fleet)
    lines += ["# HELP vlmcodec_request_duration_seconds Submit-to-result time of successful requests.",
              "# TYPE vlmcodec_request_duration_seconds histogram"]
    for fp, by_kind in histograms.items():
        model = f'model="{fp.hex()}"'
        for kind, h in by_kind.items():
            for bound, n in h["buckets"]:
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'vlmcodec_request_duration_seconds_bucket{{{model},kind="{kind}",le="{le}"}} {n}')
            lines.append(f'vlmcodec_request_duration_seconds_sum{{{model},kind="{kind}"}} {h["sum"]:.6f}')
            lines.append(f'vlmcodec_request_duration_seconds_count{{{model},kind="{kind}"}} {h["count"]}')
    return "\n".join(lines) + "\n"
