"""What cancelling the requests of clients that hung up buys an overloaded server.

One in-process server (the default model) and ``--clients`` threads sending /encode requests
back to back, each giving up after ``--client-timeout`` seconds (``RemoteCodec(timeout_s=)``:
it closes its connection) and sending the next. More clients than the server can answer in
that time, so many give up. Two arms, alternated ``--rounds`` times: the server as it is (a
request whose client hung up is cancelled if the engine has not begun it) and with that
detection switched off (the handler's ``_client_gone`` patched to never see a hang-up), as it
was. Reports the goodput (answers a client received in time, per second), the requests given
up, and what the engine ran.

    python scripts/hangup_goodput.py [--seconds 20] [--clients 12] [--client-timeout 0.5]
"""

from __future__ import annotations

import sys
import time

from vlmcodec.bench.common import positive_arg
from vlmcodec.bench.throughput import finite_arg
from serve_load import back_to_back, crop_384x256, rounds_of, serving_parser, warm_codec, write_results


def run_once(codec, image, seconds: float, clients: int, client_timeout: float, detect: bool,
             server_timeout: float | None) -> dict:
    from vlmcodec.runtime import Engine, http_handler, running_server

    def send(remote) -> str:
        try:
            remote.encode(image, quality=50)
            return "answered"
        except TimeoutError as e:
            # the server's 504 (an answer: queued past --timeout, never run), or the client's
            # own timeout (no answer: the connection closed, the request given up)
            return "shed" if hasattr(e, "answer") else "gave_up"

    real = http_handler.RequestHandler._client_gone
    if not detect:
        http_handler.RequestHandler._client_gone = lambda self: False
    try:
        engine = Engine(codec, block=False, max_queue=256, timeout_s=server_timeout)
        with running_server(engine, max_connections=256) as server:
            threads, counts = back_to_back(server.url, clients, time.monotonic() + seconds, send, retries=0,
                                           timeout_s=client_timeout)
            for t in threads:
                t.join()
            time.sleep(0.5)
    finally:
        http_handler.RequestHandler._client_gone = real
    known = ("answered", "gave_up", "shed")
    return {"detect_hangups": detect, "server_timeout_s": server_timeout,
            "goodput_per_s": counts.get("answered", 0) / seconds, **{k: counts.get(k, 0) for k in known},
            "other_errors": sum(n for k, n in counts.items() if k not in known), "abandoned_seen": server.abandoned,
            "engine_ok": engine.stats["ok"], "engine_failed_or_cancelled": engine.stats["failed"],
            "engine_batches": engine.stats["batches"]}


def main() -> int:
    p = serving_parser(__doc__, "hangup_goodput.json")
    p.add_argument("--clients", type=positive_arg, default=12)
    p.add_argument("--client-timeout", type=finite_arg(0, above=True), default=0.5)
    p.add_argument("--server-timeout", type=finite_arg(0, above=True), help="the Engine's timeout_s (serve --timeout): a request "
                   "queued longer is answered 504 without running")
    args = p.parse_args()

    image = crop_384x256()
    codec = warm_codec(image)
    runs = rounds_of([False, True], args.rounds, alternate=True,
                     run=lambda detect: run_once(codec, image, args.seconds, args.clients, args.client_timeout,
                                                 detect, args.server_timeout))
    write_results(args.out, sys.argv[1:], {"seconds": args.seconds, "clients": args.clients,
                                           "client_timeout_s": args.client_timeout,
                                           "server_timeout_s": args.server_timeout}, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
