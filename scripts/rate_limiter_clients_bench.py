"""The rate limiter with many distinct clients under a slow limit (--rate-limit 0.1: a bucket
takes 10 s to refill): buckets kept and the time of one `wait` for the first and the last 10 000
of 25 000 clients, one request each, on a fake clock.

    python scripts/rate_limiter_clients_bench.py
"""
import time

from vlmcodec.runtime.rate_limit import MAX_CLIENTS, RateLimiter

now = [0.0]
limiter = RateLimiter(0.1, 1, clock=lambda: now[0])
times = []
for i in range(25_000):
    now[0] += 0.0001
    t0 = time.perf_counter()
    limiter.wait(f"address:2001:db8::{i:x}")
    times.append(time.perf_counter() - t0)
print(f"buckets kept: {limiter.clients} (MAX_CLIENTS {MAX_CLIENTS})")
print(f"mean wait(): first 10k {sum(times[:10_000]) / 10_000 * 1e6:.1f} us, "
      f"last 10k {sum(times[-10_000:]) / 10_000 * 1e6:.1f} us")
