"""The rate limiter with many distinct clients under a slow limit (--rate-limit 0.1: a bucket
takes 10 s to refill): buckets kept and the mean time of one `wait` for the first and the last
10 000 of the clients, one request each, on a fake clock.

    python scripts/rate_limiter_clients_bench.py [--clients 25000]
"""
import argparse
import time

from vlmcodec.runtime.rate_limit import MAX_CLIENTS, RateLimiter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=25_000, help="distinct clients, one request each (default 25000)")
    a = p.parse_args()
    now = [0.0]
    limiter = RateLimiter(0.1, 1, clock=lambda: now[0])
    times = []
    for i in range(a.clients):
        now[0] += 0.0001
        t0 = time.perf_counter()
        limiter.wait(f"address:2001:db8::{i:x}")
        times.append(time.perf_counter() - t0)
    k = min(10_000, len(times))
    print(f"buckets kept: {limiter.clients} (MAX_CLIENTS {MAX_CLIENTS})")
    print(f"mean wait(): first {k} {sum(times[:k]) / k * 1e6:.1f} us, last {k} {sum(times[-k:]) / k * 1e6:.1f} us")


if __name__ == "__main__":
    main()
