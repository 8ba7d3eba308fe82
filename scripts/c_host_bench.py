"""The C library in a C++ host process (no Python, no torch in it): the block cache on and off.

A small C++ program built against ``libvlmc_decoder`` opens the default model twice: one decoder
keeps the default 128 MiB of working buffers between calls (``vlmc_decoder_set_cache_bytes``), the
other none. As a service would (one decoder, many calls), it encodes each image ``--repeats``
times with ``vlmc_decoder_encode_image`` on each decoder in turn (the order swapped every
repeat), then decodes the streams as often with ``vlmc_decoder_image``, timing every call and
counting its minor page faults (``getrusage``); ``--rounds`` such processes. glibc's malloc is
left as it comes, as in a C or C++ host; in a Python process the ``Codec`` tunes it
(vlmcodec.allocator) and the cache then has little left to save (``scripts/c_decoder_bench.py``).
Reports per arm the median time and page faults per call (each arm's first encode and decode in
each process left out), the peak resident size (VmHWM, Linux) of a process running one arm's
decoder alone (two calls per image), and checks that both arms give the same streams and pixels.

    python scripts/c_host_bench.py [--images DIR] [--limit 8] [--rounds 3] [--repeats 3] [--threads 2] [--short-side 256] [--out F]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from _served import report  # noqa: E402

PROGRAM = r"""
#include <sys/resource.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>
#include "vlmc_decoder.hpp"

static long faults() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}

static unsigned long long fnv(const uint8_t *p, size_t n) {
    unsigned long long h = 1469598103934665603ull;
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

// host MODEL CACHE_BYTES THREADS REPEATS QUALITY SHORT_SIDE ARMS RAW:W:H ...: two decoders of the
// model, one keeping CACHE_BYTES of buffers and one none, called in turn (the order swapped every
// repeat); ARMS "both", or "0" / "1" for that decoder alone (the other not even opened)
int main(int argc, char **argv) {
    const std::string which = argv[7];
    std::optional<vlmc::Decoder> arms[2];
    for (int arm = 0; arm < 2; ++arm)
        if (which == "both" || which == std::to_string(arm)) {
            arms[arm].emplace(argv[1]);
            arms[arm]->set_cache_bytes(arm ? 0 : std::strtoull(argv[2], nullptr, 10));
        }
    const int threads = std::atoi(argv[3]), repeats = std::atoi(argv[4]);
    const double quality = std::atof(argv[5]);
    const uint32_t side = uint32_t(std::atoi(argv[6]));
    for (int a = 8; a < argc; ++a) {
        std::string spec = argv[a];
        const size_t c1 = spec.rfind(':'), c0 = spec.rfind(':', c1 - 1);
        vlmc::Image im;
        im.width = uint32_t(std::stoul(spec.substr(c0 + 1, c1 - c0 - 1)));
        im.height = uint32_t(std::stoul(spec.substr(c1 + 1)));
        std::ifstream f(spec.substr(0, c0), std::ios::binary);
        im.rgb.assign(std::istreambuf_iterator<char>(f), {});
        std::vector<uint8_t> stream[2];
        vlmc::Image out[2];
        for (int stage = 0; stage < 2; ++stage)
            for (int r = 0; r < repeats; ++r)
                for (int k = 0; k < 2; ++k) {
                    const int arm = (r + a) % 2 ? 1 - k : k;
                    if (which != "both" && which != std::to_string(arm)) continue;
                    const long f0 = faults();
                    const auto t0 = std::chrono::steady_clock::now();
                    if (stage == 0)
                        stream[arm] = arms[arm]->encode_image(im, quality, side, 0, threads);
                    else
                        out[arm] = arms[arm]->image(stream[arm], threads);
                    const auto t1 = std::chrono::steady_clock::now();
                    std::printf("%s %d %d %.4f %ld\n", stage ? "decode" : "encode", arm, a - 7,
                                std::chrono::duration<double, std::milli>(t1 - t0).count(), faults() - f0);
                }
        for (int arm = 0; arm < 2; ++arm)
            if (which == "both" || which == std::to_string(arm)) std::printf("hash %d %d %llu %llu\n", arm, a - 7, fnv(stream[arm].data(), stream[arm].size()),
                        fnv(out[arm].rgb.data(), out[arm].rgb.size()));
    }
    // this process's peak resident size (VmHWM: ru_maxrss would carry the Python parent's peak
    // over from before the exec)
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind("VmHWM:", 0) == 0) std::printf("maxrss_kb %ld\n", std::atol(line.c_str() + 6));
}
"""


def build(work: Path) -> tuple[Path, Path]:
    """(the host program, the default model's decoder-model file), built into ``work``."""
    import shutil

    from vlmcodec.codec import default_model_path
    from vlmcodec.export.c_decoder import build_c_decoder, export_c_decoder
    from vlmcodec.models.checkpoint import load_model

    lib = build_c_decoder(ROOT, work / "build")
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise SystemExit("not available: no C++ compiler (c++) to build the host program")
    (work / "host.cpp").write_text(PROGRAM)
    subprocess.run([cxx, "-O2", "-std=c++17", str(work / "host.cpp"), f"-I{ROOT / 'kernels' / 'decoder'}",
                    f"-L{lib}", "-lvlmc_decoder", f"-Wl,-rpath,{lib}", "-o", str(work / "host")], check=True)
    return work / "host", Path(export_c_decoder(load_model(default_model_path()), work))


def run_process(host: Path, model: Path, a, specs: list[str], which: str = "both") -> dict:
    """One process: each arm's per-call times and faults (each arm's first encode and decode left
    out: they fault in the first buffers), the streams' and pixels' hashes, the peak resident size."""
    run = subprocess.run([str(host), str(model), str(a.cache_bytes), str(a.threads), str(a.repeats), str(a.quality),
                          str(a.short_side), which, *specs], capture_output=True, text=True, check=True)
    calls = {arm: {"encode": [], "decode": []} for arm in ARMS}
    hashes: dict[str, list] = {arm: [] for arm in ARMS}
    rss = 0
    for line in run.stdout.splitlines():
        f = line.split()
        if f[0] in ("encode", "decode"):
            calls[ARMS[int(f[1])]][f[0]].append((float(f[3]), int(f[4])))
        elif f[0] == "hash":
            hashes[ARMS[int(f[1])]].append((f[3], f[4]))
        elif f[0] == "maxrss_kb":
            rss = int(f[1])
    return {"calls": {arm: {k: v[1:] for k, v in c.items()} for arm, c in calls.items()}, "hashes": hashes,
            "maxrss_kb": rss}


ARMS = ("cache", "no cache")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default=str(ROOT.parent / "shared/data/kodak"))
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="calls per image and stage in each process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quality", type=float, default=50)
    p.add_argument("--short-side", type=int, default=0)
    p.add_argument("--cache-bytes", type=int, default=128 << 20, help="the caching decoder's limit")
    p.add_argument("--out")
    a = p.parse_args()
    from vlmcodec.image_io import load_image

    work = Path(tempfile.mkdtemp(prefix="c_host_bench_"))
    host, model = build(work)
    specs = []
    for i, f in enumerate(sorted(Path(a.images).glob("*.png"))[: a.limit]):
        im = load_image(f)
        (work / f"{i}.rgb").write_bytes(im.tobytes())
        specs.append(f"{work / f'{i}.rgb'}:{im.shape[1]}:{im.shape[0]}")
    runs = [run_process(host, model, a, specs) for _ in range(a.rounds)]
    same = all(r["hashes"]["cache"] == r["hashes"]["no cache"] == runs[0]["hashes"]["cache"] for r in runs)
    result = {"images": len(specs), "rounds": a.rounds, "repeats": a.repeats, "threads": a.threads,
              "quality": a.quality, "short_side": a.short_side, "cache_bytes": a.cache_bytes,
              "same_streams_and_pixels": same}
    for stage in ("encode", "decode"):
        med = {arm: statistics.median(t for r in runs for t, _ in r["calls"][arm][stage]) for arm in ARMS}
        flt = {arm: statistics.median(n for r in runs for _, n in r["calls"][arm][stage]) for arm in ARMS}
        result[stage] = {"median_ms": med, "ratio_cache_over_none": med["cache"] / med["no cache"],
                         "median_page_faults": flt}
    # each decoder alone in a process (two calls per image and stage): its peak resident size
    peaks = {arm: run_process(host, model, argparse.Namespace(**{**vars(a), "repeats": 2}), specs, str(k))["maxrss_kb"]
             for k, arm in enumerate(ARMS)}
    result["peak_rss_mb_alone"] = {arm: kb / 1024 for arm, kb in peaks.items()}
    report(result, a.out)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
