"""How many threads idle connections cost a `CodecServer`: N silent connections opened at once
against the default bound (``--max-connections`` 128) and against no bound, in this process;
then whether the server still answers once they close.

    python scripts/serve_flood_check.py --connections 500
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
import threading
import time


def run(connections: int, bounded: bool) -> str:
    from vlmcodec import Codec
    from vlmcodec.runtime import Engine
    from vlmcodec.runtime.server import CodecServer, serve_in_thread

    engine = Engine(Codec(), block=False)
    server = CodecServer(engine, "127.0.0.1", 0, **({} if bounded else {"max_connections": 10**6}))
    serve_in_thread(server)
    base = threading.active_count()
    socks = [socket.create_connection(("127.0.0.1", server.server_port)) for _ in range(connections)]
    time.sleep(2)
    added, open_, refused = threading.active_count() - base, server.connections, server.connections_refused
    for s in socks:
        s.close()
    time.sleep(1)
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    conn.request("GET", "/health")
    status = conn.getresponse().status
    conn.close()
    server.shutdown()
    server.server_close()
    engine.shutdown()
    name = f"max_connections={server.max_connections}" if bounded else "unbounded"
    return (f"{name}: {connections} idle connections added {added} threads "
            f"(open {open_}, refused {refused}); /health afterwards: {status}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=500)
    args = ap.parse_args()
    for bounded in (True, False):
        print(run(args.connections, bounded), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
