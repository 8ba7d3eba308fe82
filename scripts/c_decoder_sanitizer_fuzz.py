"""The C decoder under AddressSanitizer and UndefinedBehaviorSanitizer, over damaged streams.

Builds the C library and its tool with -fsanitize=address,undefined (cmake, into a temporary
folder), then runs the tool on a small random model's intact streams at five consumer sizes
(``--short-side``: antialiased downscales, upscales) and on N mutated streams — truncations, bit
flips, byte overwrites with and without a recomputed CRC (so that damage reaches rANS and h_s) —
each decoded to latents, to an image and to an image at a consumer's 20 px. Then the stream
writer (``vlmc_write_stream``) on ``--writes`` random (y, z) pairs — random sizes, coded sizes and
qualities; some with a NaN, an infinity, a value too large to code, a z beyond the exact h_s or a
truncated file — each written stream compared with ``Codec.entropy_encode``'s bytes and decoded by
the sanitized decoder. Then rate control (``vlmc_decoder_write_stream_within``, which needs a
callback the tool cannot give): the sanitized library loaded into a Python child process
(``LD_PRELOAD`` of the compiler's libasan and libubsan) runs ``--rate-control`` random searches
(random sizes, budgets, quality bounds, threads; every seventh callback raising), each compared
with ``rate_control.largest_fitting`` over the same library's one-pass streams. Any exit other
than 0 or 2 (a clean error), any difference, or any sanitizer report, stops it. Then the image
encoder (``vlmc_encode``) on ``--encodes`` random images — random sizes (1 px sides, odd sizes, long
strips), qualities, consumer sizes, byte budgets, thread counts, with and without the pre-editor —
from a small random model with a random pre-editor that attends in windows of 2 tokens (every
branch at small sizes), each stream decoded by the sanitized decoder; PGM and 16-bit PPM files,
which must encode; and malformed PPM files, which must be refused cleanly. Last, ``--model-files`` damaged model files behind a recomputed CRC-32
(bytes overwritten, half of them in the first KiB where the sizes and tables are; 4-byte fields set
to NaN, ±infinity or extreme integers; truncations), of the decoder-only model (each opened and used
to decode an intact stream to latents and to an image) and of the pre-editor model (each used to
encode an image): every one either refused (exit 2) or run to the end, with no sanitizer report. A
check to run by hand (about a minute per 800 streams), not a test.

    python scripts/c_decoder_sanitizer_fuzz.py [--streams 800] [--writes 200] [--rate-control 60] [--encodes 100] \
        [--model-files 300]
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path) -> Path:
    flags = "-fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer"
    from vlmcodec.export.c_decoder import find_cmake

    cmake = find_cmake() or "cmake"
    subprocess.run([cmake, "-S", str(ROOT), "-B", str(out), "-DVLMCODEC_BUILD_PYTHON=OFF", "-DVLMCODEC_BUILD_TESTS=OFF",
                    "-DCMAKE_BUILD_TYPE=Debug", f"-DCMAKE_CXX_FLAGS={flags} -O1", f"-DCMAKE_C_FLAGS={flags}",
                    f"-DCMAKE_EXE_LINKER_FLAGS={flags}", f"-DCMAKE_SHARED_LINKER_FLAGS={flags}"],
                   check=True, capture_output=True)
    subprocess.run([cmake, "--build", str(out), "--target", "vlmc_decode_latents", "vlmc_write_stream", "vlmc_encode",
                    "-j", "2"],
                   check=True, capture_output=True)
    return out / "kernels" / "decoder" / "vlmc_decode_latents"


def sanitizer_failed(run: subprocess.CompletedProcess) -> bool:
    return run.returncode not in (0, 2) or "Sanitizer" in run.stderr or "runtime error" in run.stderr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=800)
    p.add_argument("--writes", type=int, default=200, help="random (y, z) pairs for the stream writer")
    p.add_argument("--rate-control", type=int, default=60, help="random rate-control searches (0: none)")
    p.add_argument("--encodes", type=int, default=100, help="random images for the image encoder (0: none)")
    p.add_argument("--model-files", type=int, default=300, help="damaged model files of each kind (0: none)")
    p.add_argument("--rate-control-child", nargs=3, metavar=("LIB", "MODEL", "VLMD"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.rate_control_child:
        return rate_control_child(*a.rate_control_child, a.rate_control)

    from vlmcodec import Codec
    from vlmcodec.bitstream.damage import damage
    from vlmcodec.export.c_decoder import export_c_decoder
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import load_model, save_model

    work = Path(tempfile.mkdtemp(prefix="c_decoder_fuzz_"))
    tool = build(work / "build")
    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016)))
    with torch.no_grad():
        net.g_a[-1].weight.mul_(40.0)  # |y| large enough that the quality changes the rate
    save_model(net, work / "tiny.safetensors")
    model_file = export_c_decoder(load_model(work / "tiny.safetensors"), work)
    codec = Codec(work / "tiny.safetensors")
    rng = np.random.default_rng(0)

    def image(h: int, w: int) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 100 * np.sin(xx / 17.0), 128 + 90 * np.cos(yy / 11.0), (xx + yy) % 256], axis=2)
        return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)

    streams = [codec.encode(image(h, w), q) for h, w, q in [(64, 64, 50), (90, 70, 10), (130, 65, 90)]]
    streams.append(codec.encode(image(130, 65), 40, short_side=32))  # a rescaled header
    t0 = time.time()
    # the intact streams at a consumer's sizes first: antialiased downscales, upscales, as coded
    for i, data in enumerate(streams):
        (work / "s.vlmc").write_bytes(data)
        for side in ("16", "20", "32", "50", "200"):
            run = subprocess.run([str(tool), str(model_file), str(work / "s.vlmc"), "--image", str(work / "x.ppm"),
                                  "--short-side", side], capture_output=True, text=True)
            if run.returncode != 0 or "Sanitizer" in run.stderr or "runtime error" in run.stderr:
                print(f"intact stream {i} at --short-side {side}: exit {run.returncode}\n{run.stderr[-3000:]}")
                return 1
    r = random.Random(7)
    exits: dict[int, int] = {}
    for i in range(a.streams):
        original = r.choice(streams)
        kind = i % 4
        if kind == 0:
            data = damage(original, "truncate", r)
        elif kind == 1:
            data = damage(original, "flip", r)
        else:  # overwrites anywhere (2) or in the payload (3), behind a recomputed CRC
            data = damage(original, "overwrite", r, payload_only=kind == 3, valid_crc=True)
        (work / "s.vlmc").write_bytes(data)
        for args in ([str(work / "y.f32")], ["--image", str(work / "x.ppm")],
                     ["--image", str(work / "x.ppm"), "--short-side", "20"]):
            run = subprocess.run([str(tool), str(model_file), str(work / "s.vlmc"), *args], capture_output=True, text=True)
            if run.returncode not in (0, 2) or "Sanitizer" in run.stderr or "runtime error" in run.stderr:
                print(f"stream {i} (kind {kind}): exit {run.returncode}\n{run.stderr[-3000:]}")
                return 1
            if run.returncode == 0 and kind < 2:  # truncated or flipped under the old CRC: it must catch them
                print(f"stream {i} (kind {kind}: {'truncated' if kind == 0 else 'a bit flipped'}, CRC not "
                      f"recomputed) was decoded: the CRC check missed it")
                return 1
            exits[run.returncode] = exits.get(run.returncode, 0) + 1
    t1 = time.time()
    writes = write_fuzz(tool.with_name("vlmc_write_stream"), tool, model_file, codec, work, a.writes, r)
    if writes is None:
        return 1
    t2 = time.time()
    searches = ""
    if a.rate_control:
        lib = tool.with_name("libvlmc_decoder.so")
        preload = " ".join(subprocess.run(["cc", f"-print-file-name={name}"], capture_output=True, text=True,
                                          check=True).stdout.strip() for name in ("libasan.so", "libubsan.so"))
        child = subprocess.run([sys.executable, __file__, "--rate-control", str(a.rate_control), "--rate-control-child",
                                str(lib), str(work / "tiny.safetensors"), str(model_file)], capture_output=True,
                               text=True, env={**os.environ, "LD_PRELOAD": preload, "ASAN_OPTIONS": "detect_leaks=0"})
        if child.returncode != 0 or "Sanitizer" in child.stderr or "runtime error" in child.stderr:
            print(f"rate control: exit {child.returncode}\n{child.stdout[-2000:]}{child.stderr[-3000:]}")
            return 1
        searches = f"; rate control, {a.rate_control} searches: {child.stdout.strip()}, {time.time() - t2:.0f} s"
    t3 = time.time()
    encodes = encode_fuzz(tool.with_name("vlmc_encode"), tool, work, a.encodes, r) if a.encodes else "none"
    if encodes is None:
        return 1
    t4 = time.time()
    models = model_file_fuzz(tool, model_file, streams[0], work / "pre" / model_file.name, work, a.model_files, r)
    if models is None:
        return 1
    print(f"{len(streams)} intact streams at 5 consumer sizes, then {a.streams} damaged streams, latents, image "
          f"and image at 20 px each: exits {exits} (0 only behind a recomputed CRC), no sanitizer report, "
          f"{t1 - t0:.0f} s; the writer on {a.writes} random latents: {writes}, {t2 - t1:.0f} s{searches}; "
          f"the image encoder on {a.encodes} random images: {encodes}, {t4 - t3:.0f} s; "
          f"damaged model files: {models}, {time.time() - t4:.0f} s")
    return 0


def damaged_model(blob: bytes, r: random.Random) -> bytes:
    """A model file with some damage and a valid CRC-32 (so that the damage reaches the loader)."""
    body = bytearray(blob[:-4])
    kind = r.randrange(4)
    if kind == 3:  # truncated
        body = body[: r.randrange(8, len(body))]
    elif kind == 2:  # a 4-byte field set to a value a writer would never put there
        at = r.randrange(8, len(body) - 4) // 4 * 4 if r.random() < 0.5 else r.randrange(8, min(1024, len(body) - 4))
        body[at:at + 4] = r.choice([struct.pack("<f", float("nan")), struct.pack("<f", float("inf")),
                                    struct.pack("<f", -float("inf")), struct.pack("<f", 3e38),
                                    struct.pack("<I", 0xFFFFFFFF), struct.pack("<I", 0x7FFFFFFF),
                                    struct.pack("<I", 0x80000000), struct.pack("<I", 0)])
    else:  # random bytes
        for _ in range(r.randint(1, 8)):
            at = r.randrange(8, min(1024, len(body))) if r.random() < 0.5 else r.randrange(8, len(body))
            body[at] = r.randrange(256) if kind == 0 else body[at] ^ (1 << r.randrange(8))
    body = bytes(body)
    return body + struct.pack("<I", zlib.crc32(body))


def model_file_fuzz(decoder: Path, model_file: Path, stream: bytes, pre_model_file: Path, work: Path, n: int,
                    r: random.Random) -> str | None:
    """n damaged decoder-only model files, each opened by the tool and used to decode the intact
    ``stream`` (to latents, to an image); n damaged pre-editor model files, each used to encode an
    image (on 1 and 2 threads). A summary, or None (after printing why) on a failure."""
    from PIL import Image

    (work / "s.vlmc").write_bytes(stream)
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(work / "m.ppm")
    bad = str(work / "bad.vlmd")
    encode = [str(decoder.with_name("vlmc_encode")), bad, str(work / "m.ppm"), str(work / "m.vlmc"), "--quality", "50"]
    jobs = [(model_file, "decoded", [[str(decoder), bad, str(work / "s.vlmc"), str(work / "y.f32")],
                                     [str(decoder), bad, str(work / "s.vlmc"), "--image", str(work / "x.ppm")]]),
            (pre_model_file, "encoded", [encode, [*encode, "--threads", "2"]])]
    counts = {"refused": 0, "decoded": 0, "encoded": 0}
    for original, done, commands in jobs:
        blob = original.read_bytes()
        for i in range(n):
            Path(bad).write_bytes(damaged_model(blob, r))
            for argv in commands:
                run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
                if sanitizer_failed(run):
                    print(f"damaged model file {i} ({done}): exit {run.returncode}\n{run.stderr[-3000:]}")
                    Path(bad).rename(work / f"failing_{done}.vlmd")
                    print(f"kept as {work / f'failing_{done}.vlmd'}")
                    return None
                counts["refused" if run.returncode == 2 else done] += 1
    return f"{2 * n} files, {sum(counts.values())} runs: {counts}"


def encode_fuzz(encoder: Path, decoder: Path, work: Path, n: int, r: random.Random) -> str | None:
    """vlmc_encode on n random images of a random model with a windowed pre-editor; each stream
    decoded; then malformed PPMs. A summary, or None (after printing why) on a failure."""
    from PIL import Image

    from vlmcodec.export.c_decoder import export_c_decoder
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import load_model, save_model

    torch.manual_seed(5)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016), pre_editor=True))
    with torch.no_grad():
        net.g_a[-1].weight.mul_(40.0)
        net.pre_editor.out.weight.normal_(0.0, 0.05)
    save_model(net, work / "pre.safetensors")
    loaded = load_model(work / "pre.safetensors")
    loaded.model.pre_editor.attention_window, loaded.model.pre_editor.global_attention_tokens = 2, None
    model_file = export_c_decoder(loaded, work / "pre")
    rng = np.random.default_rng(r.randrange(1 << 30))
    counts = {"streams": 0, "over budget": 0}
    for i in range(n):
        h, w = r.choice([(1, 1), (1, 200), (200, 1), (17, 300), (64, 64), (65, 129), (r.randint(1, 260), r.randint(1, 260))])
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(work / "in.ppm")
        args = ["--threads", str(r.choice([0, 1, 2, 3]))]
        if r.random() < 0.3:
            args += ["--max-bytes", str(r.choice([1, 50, 200, 1000, 100000]))]
        else:
            args += ["--quality", f"{r.uniform(0, 100):.2f}"]
        if r.random() < 0.3:
            args += ["--short-side", str(r.choice([16, 20, 50, 100]))]
        if r.random() < 0.2:
            args.append("--no-pre-edit")
        run = subprocess.run([str(encoder), str(model_file), str(work / "in.ppm"), str(work / "e.vlmc"), *args],
                             capture_output=True, text=True)
        if sanitizer_failed(run) or (run.returncode == 2 and "over the budget" not in run.stderr):
            print(f"encode {i} ({h}x{w}, {args}): exit {run.returncode}\n{run.stderr[-3000:]}")
            return None
        if run.returncode == 2:
            counts["over budget"] += 1
            continue
        dec = subprocess.run([str(decoder), str(model_file), str(work / "e.vlmc"), "--image", str(work / "d.ppm")],
                             capture_output=True, text=True)
        if dec.returncode != 0 or sanitizer_failed(dec):
            print(f"decoding encode {i} ({h}x{w}, {args}): exit {dec.returncode}\n{dec.stderr[-3000:]}")
            return None
        counts["streams"] += 1
    good = (work / "in.ppm").read_bytes()
    # PGM and PPM of other maxvals are read (two bytes a sample above 255): each size's last byte
    # must be there, no byte beyond it read
    pnm = [b"P6 4 4 65535\n" + rng.bytes(96), b"P5 4 4 255\n" + rng.bytes(16), b"P5 3 5 4095\n" + rng.bytes(30),
           b"P6 5 3 100\n" + rng.bytes(45), b"P5 1 1 1\n" + b"\x01"]
    bad = [b"", b"P6", b"P6 4 4 255\n", b"P6 4 4 65535\n" + bytes(95), b"P5 4 4 255\n" + bytes(15),
           b"P5 4 4 0\n" + bytes(16), b"P6 4 4 65536\n" + bytes(192), b"P4 4 4\n" + bytes(8),
           b"P6 0 4 255\n", b"P6 99999999999 4 255\n", good[: len(good) // 2], b"P6\n#" + bytes(50)]
    for j, (blob, exit_code, what) in enumerate([(b, 0, "PNM") for b in pnm] + [(b, 2, "malformed PPM") for b in bad]):
        (work / "in.pnm").write_bytes(blob)
        run = subprocess.run([str(encoder), str(model_file), str(work / "in.pnm"), str(work / "e.vlmc")],
                             capture_output=True, text=True)
        if run.returncode != exit_code or sanitizer_failed(run):
            print(f"{what} {j}: exit {run.returncode}\n{run.stderr[-3000:]}")
            return None
    return f"{counts['streams']} streams written and decoded, {counts['over budget']} over their budget, " \
           f"{len(pnm)} PGM/16-bit PPM files encoded, {len(bad)} malformed PPMs refused"


def rate_control_child(lib: str, model: str, vlmd: str, n: int) -> int:
    """In the process the sanitizers are preloaded into: n random write_stream_within searches, each
    checked against rate_control.largest_fitting over the library's own one-pass streams."""
    from vlmcodec import Codec, rate_control
    from vlmcodec.export.c_decoder import CDecoderError, CStreamDecoder

    codec, writer = Codec(model), CStreamDecoder(lib, vlmd)
    rng = np.random.default_rng(1)
    outcomes: dict[str, int] = {}
    for i in range(n):
        h, w = int(rng.integers(16, 200)), int(rng.integers(16, 200))
        prep = codec.prepare(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), 0)
        y_raw = codec.analyse_unscaled([prep.pixels])[1][0].numpy()

        def h_a(y: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return codec.backend.hyper_analysis(torch.from_numpy(y)[None])[0].numpy()

        z_shape = (codec.N, y_raw.shape[1] // 4, y_raw.shape[2] // 4)
        budget, lo, hi = int(rng.integers(10, 4000)), float(rng.integers(0, 30)), float(rng.integers(30, 101))
        try:
            data, _ = writer.write_stream_within(y_raw, h_a if i % 7 else (lambda y: 1 / 0), z_shape, w, h, budget,
                                                 min_quality=lo, max_quality=hi, threads=int(rng.integers(0, 3)))
        except CDecoderError as e:
            outcomes[f"error {e.code}"] = outcomes.get(f"error {e.code}", 0) + 1
            continue

        def stream_at(q: float) -> bytes:
            y = y_raw * writer.gain(q)[:, None, None]
            return writer.write_stream(y, h_a(y), w, h, q)

        if data != rate_control.largest_fitting(stream_at, budget, lo, hi)[0]:
            print(f"search {i}: the stream differs from rate_control.largest_fitting's")
            return 1
        outcomes["fitted, identical"] = outcomes.get("fitted, identical", 0) + 1
    print(outcomes)
    return 0


def write_fuzz(writer: Path, decoder: Path, model_file: Path, codec, work: Path, n: int, r: random.Random) -> dict | None:
    """vlmc_write_stream on n random (y, z): clean ones must give Codec.entropy_encode's bytes and
    decode; damaged ones a clean error. None (after printing why) on a failure."""
    from vlmcodec.codec import PreparedImage

    counts = {"written, identical": 0, "refused": 0}
    for i in range(n):
        cw, ch = r.randint(1, 200), r.randint(1, 200)
        w, h = (cw, ch) if r.random() < 0.7 else (cw + r.randint(1, 300), ch + r.randint(1, 300))
        quality = round(r.uniform(0, 100), 2)
        hy, wy = -(-ch // 64) * 4, -(-cw // 64) * 4
        y = np.random.default_rng(i).normal(0, r.choice([0.5, 5, 50]), (codec.M, hy, wy)).astype(np.float32)
        z = np.random.default_rng(i + 1).normal(0, r.choice([0.5, 3, 20]), (codec.N, hy // 4, wy // 4)).astype(np.float32)
        kind = i % 8
        if kind == 5:
            y.flat[r.randrange(y.size)] = r.choice([np.nan, np.inf, -np.inf, 3e9])
        elif kind == 6:
            z.flat[r.randrange(z.size)] = r.choice([np.nan, 1e7, 1e5])
        (work / "y.f32").write_bytes(y.tobytes()[: None if kind != 7 else r.randrange(y.nbytes)])
        (work / "z.f32").write_bytes(z.tobytes())
        args = [str(writer), str(model_file), str(work / "y.f32"), str(work / "z.f32"), str(work / "w.vlmc"), "--size",
                f"{w}x{h}", "--coded-size", f"{cw}x{ch}", "--quality", f"{quality}", "--threads", str(r.randint(0, 3))]
        run = subprocess.run(args, capture_output=True, text=True)
        if sanitizer_failed(run):
            print(f"write {i} (kind {kind}): exit {run.returncode}\n{run.stderr[-3000:]}")
            return None
        if run.returncode == 2:
            counts["refused"] += 1
            if kind < 5:
                print(f"write {i}: a clean input was refused: {run.stderr}")
                return None
            continue
        data = (work / "w.vlmc").read_bytes()
        prep = PreparedImage(np.zeros((ch, cw, 3), np.uint8), quality, (h, w))
        if data != codec.entropy_encode(torch.from_numpy(y), torch.from_numpy(z), prep):
            print(f"write {i}: the stream differs from Codec.entropy_encode's")
            return None
        dec = subprocess.run([str(decoder), str(model_file), str(work / "w.vlmc"), str(work / "y_hat.f32")],
                             capture_output=True, text=True)
        if dec.returncode != 0 or sanitizer_failed(dec):
            print(f"write {i}: its stream does not decode: exit {dec.returncode}\n{dec.stderr[-3000:]}")
            return None
        counts["written, identical"] += 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
