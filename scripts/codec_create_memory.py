"""Memory kept by making Codec objects over and over (a process that rebuilds codecs: pickled
codecs in worker tasks, a Codec per request): RSS growth per Codec after a warm-up.

    python scripts/codec_create_memory.py [--model FILE] [--count 1500]
"""
import argparse
import gc

from vlmcodec import Codec


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model file (default: the default model)")
    p.add_argument("--count", type=int, default=1500, help="codecs made after 200 of warm-up (default 1500)")
    a = p.parse_args()
    for _ in range(200):
        Codec(a.model)
    gc.collect()
    before = rss_kb()
    for _ in range(a.count):
        Codec(a.model)
    gc.collect()
    after = rss_kb()
    print(f"{a.count} more Codec(): RSS {before / 1024:.1f} -> {after / 1024:.1f} MB "
          f"({(after - before) / a.count:.2f} KB per Codec)")


if __name__ == "__main__":
    main()
