"""Side by side: `vlmcodec serve` over HTTPS with a bearer token against plain HTTP, the same
requests through ``RemoteCodec``. Two server processes (one each), started before timing; the
arms alternate round by round (which goes first alternating too), each round encoding and then decoding every image once with
``--concurrency`` client threads. Streams and pixels must be identical across arms. Reported:
images per second (medians) and the HTTPS/HTTP time ratios. Needs the ``openssl`` command (a
self-signed certificate is made in a temporary folder).

    python scripts/tls_overhead_bench.py --rounds 5
"""

from __future__ import annotations

import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _served import client_bench_args, report, start_server


def main() -> int:
    args = client_bench_args(__doc__, rounds=5)

    from vlmcodec.image_io import load_image
    from vlmcodec.runtime import RemoteCodec

    images = [load_image(f) for f in sorted(Path(args.images).glob("*.png"))]
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, token = Path(tmp) / "cert.pem", Path(tmp) / "key.pem", Path(tmp) / "token"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        token.write_text("bench-token\n")
        servers = [start_server([]), start_server(["--tls-cert", str(cert), "--tls-key", str(key),
                                                   "--auth-token-file", str(token)])]
        try:
            clients = {"http": RemoteCodec(servers[0][1]),
                       "https + token": RemoteCodec(servers[1][1], token="bench-token",
                                                    ssl_context=ssl.create_default_context(cafile=str(cert)))}
            times = {(arm, job): [] for arm in clients for job in ("encode", "decode")}
            outputs: dict[str, tuple] = {}
            with ThreadPoolExecutor(args.concurrency) as pool:
                for remote in clients.values():  # warm-up pass
                    list(pool.map(remote.decode, pool.map(lambda im, r=remote: r.encode(im, args.quality), images)))
                for r in range(args.rounds):
                    order = list(clients.items())
                    for arm, remote in (order if r % 2 == 0 else order[::-1]):  # neither always goes first
                        t = time.perf_counter()
                        streams = list(pool.map(lambda im, r=remote: r.encode(im, args.quality), images))
                        times[arm, "encode"].append(time.perf_counter() - t)
                        t = time.perf_counter()
                        pixels = list(pool.map(remote.decode, streams))
                        times[arm, "decode"].append(time.perf_counter() - t)
                        outputs[arm] = (streams, [p.tobytes() for p in pixels])
                        print(f"round {r + 1} {arm}: encode {len(images) / times[arm, 'encode'][-1]:.2f}, "
                              f"decode {len(images) / times[arm, 'decode'][-1]:.2f} img/s", flush=True)
            assert outputs["http"] == outputs["https + token"], "the arms' streams or pixels differ"
            for remote in clients.values():
                remote.close()
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(30)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"images": len(images), "concurrency": args.concurrency, "rounds": args.rounds,
              "img_per_s": {f"{arm} {job}": len(images) / m for (arm, job), m in med.items()},
              "https_over_http_time": {job: med["https + token", job] / med["http", job] for job in ("encode", "decode")},
              "identical": True}
    return report(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
