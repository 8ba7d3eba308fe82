"""The C decoder under ThreadSanitizer: one decoder shared by concurrent calls.

The C API says a decoder is read-only once open and may be shared between threads. This builds
the library with -fsanitize=thread (cmake, into a temporary folder) and a small C program that
opens the default model's decoder file once and decodes the same streams from several threads
at once, each call itself using 2 threads (full size, a consumer-scale stream that is upsampled,
both at a consumer's 160 px, and latents), and writes the stream again from its encoder outputs
(y · gain, z: vlmc_decoder_write_stream, 2 threads) and runs rate control on it
(vlmc_decoder_write_stream_within with a stand-in h_a callback: z = y / 100), and encodes the
image it decoded (vlmc_decoder_encode_image, 2 threads: the pre-editor, g_a, h_a; at a consumer's
160 px for the consumer-scale stream), then checks that every thread got the same bytes, wrote
the stream it decoded, the same rate-controlled one and the same encoded one. Any ThreadSanitizer
report or difference fails it. A check to run by hand (a few minutes), not a test.

    python scripts/c_decoder_thread_sanitizer.py [--threads 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vlmc_decoder.h"

static vlmc_decoder *dec;
static unsigned char *data;
static size_t size, n_rgb, n_small, n_y, n_z;
static int rounds;
static float *enc_y, *enc_z; /* the encoder's outputs that wrote the stream */
static unsigned width, height, coded_width, coded_height, flags;
static double quality;

typedef struct {
    unsigned char *rgb, *small, *fitted, *encoded;
    size_t fitted_size, encoded_size;
    double fitted_quality;
    float *y;
    int failed;
} Job;

static int stand_in(void *user, const float *y, size_t y_count, float *z, size_t z_count) {
    (void)user;
    for (size_t i = 0; i < z_count && i < y_count; ++i) z[i] = y[i] * 0.01f;
    return 0;
}

static float *read_floats(const char *path, size_t *count) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *count = (size_t)ftell(f) / sizeof(float);
    fseek(f, 0, SEEK_SET);
    float *v = malloc(*count * sizeof(float));
    if (fread(v, sizeof(float), *count, f) != *count) v = NULL;
    fclose(f);
    return v;
}

static void *work(void *arg) {
    Job *job = arg;
    for (int r = 0; r < rounds; ++r) {
        if (vlmc_decoder_image(dec, data, size, 0, 2, job->rgb, n_rgb) != VLMC_DEC_OK) job->failed = 1;
        if (vlmc_decoder_latents(dec, data, size, 0, 2, job->y, n_y) != VLMC_DEC_OK) job->failed = 1;
        if (vlmc_decoder_image_at(dec, data, size, 160, 2, job->small, n_small) != VLMC_DEC_OK) job->failed = 1;
        unsigned char *stream = NULL;
        size_t written = 0;
        if (vlmc_decoder_write_stream(dec, enc_y, n_y, enc_z, n_z, width, height, coded_width, coded_height, quality,
                                      flags, 2, &stream, &written) != VLMC_DEC_OK ||
            written != size || memcmp(stream, data, size) != 0)
            job->failed = 1;
        vlmc_decoder_free_stream(stream);
        double q = -1;
        vlmc_decoder_free_stream(job->fitted);
        job->fitted = NULL;
        if (vlmc_decoder_write_stream_within(dec, enc_y, n_y, n_z, stand_in, NULL, width, height, coded_width,
                                             coded_height, 2 * size, 0, 100, flags, 2, &job->fitted,
                                             &job->fitted_size, &q) != VLMC_DEC_OK)
            job->failed = 1;
        job->fitted_quality = q;
        vlmc_decoder_free_stream(job->encoded);
        job->encoded = NULL;
        if (vlmc_decoder_encode_image(dec, job->rgb, width, height, quality, coded_width != width ? 160 : 0, 0, 2,
                                      &job->encoded, &job->encoded_size) != VLMC_DEC_OK)
            job->failed = 1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = atoi(argv[3]), bad = 0;
    rounds = atoi(argv[4]);
    size_t got_y = 0;
    enc_y = read_floats(argv[5], &got_y), enc_z = read_floats(argv[6], &n_z);
    if (!enc_y || !enc_z) return 3;
    width = atoi(argv[7]), height = atoi(argv[8]), coded_width = atoi(argv[9]), coded_height = atoi(argv[10]);
    quality = atof(argv[11]), flags = atoi(argv[12]);
    if (vlmc_decoder_open(argv[1], &dec) != VLMC_DEC_OK) return fprintf(stderr, "%s\n", vlmc_decoder_last_error()), 3;
    FILE *f = fopen(argv[2], "rb");
    if (!f) return 3;
    fseek(f, 0, SEEK_END);
    size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc(size);
    if (fread(data, 1, size, f) != size) return 3;
    fclose(f);
    vlmc_stream_info info;
    if (vlmc_decoder_stream_info(dec, data, size, &info) != VLMC_DEC_OK) return 3;
    n_rgb = (size_t)info.width * info.height * 3;
    n_y = (size_t)info.channels * info.latent_height * info.latent_width;
    if (got_y != n_y) return fprintf(stderr, "y has %zu floats, the stream %zu\n", got_y, n_y), 3;
    uint32_t small_w, small_h;
    if (vlmc_decoder_consumer_size(&info, 160, &small_w, &small_h) != VLMC_DEC_OK) return 3;
    n_small = (size_t)small_w * small_h * 3;
    pthread_t tid[64];
    Job jobs[64];
    for (int t = 0; t < threads; ++t) {
        jobs[t].rgb = malloc(n_rgb), jobs[t].small = malloc(n_small), jobs[t].y = malloc(n_y * sizeof(float));
        jobs[t].failed = 0, jobs[t].fitted = NULL, jobs[t].fitted_size = 0, jobs[t].encoded = NULL;
        jobs[t].encoded_size = 0;
        pthread_create(&tid[t], NULL, work, &jobs[t]);
    }
    for (int t = 0; t < threads; ++t) pthread_join(tid[t], NULL);
    for (int t = 0; t < threads; ++t)
        bad += jobs[t].failed || memcmp(jobs[t].rgb, jobs[0].rgb, n_rgb) || memcmp(jobs[t].y, jobs[0].y, n_y * sizeof(float)) ||
               memcmp(jobs[t].small, jobs[0].small, n_small) || jobs[t].fitted_size != jobs[0].fitted_size ||
               memcmp(jobs[t].fitted, jobs[0].fitted, jobs[0].fitted_size) ||
               jobs[t].encoded_size != jobs[0].encoded_size ||
               memcmp(jobs[t].encoded, jobs[0].encoded, jobs[0].encoded_size);
    printf("%s: %d threads x %d rounds, %s (rate control: %zu bytes at quality %.2f; encoded: %zu bytes)\n", argv[2],
           threads, rounds, bad ? "DIFFERENT or FAILED" : "all equal", jobs[0].fitted_size, jobs[0].fitted_quality,
           jobs[0].encoded_size);
    vlmc_decoder_free(dec);
    return bad ? 1 : 0;
}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=4, help="concurrent calls (1..64)")
    p.add_argument("--rounds", type=int, default=2, help="image + latents + consumer-size decodes per thread")
    a = p.parse_args()
    if not 1 <= a.threads <= 64 or a.rounds < 1:
        p.error("--threads must be in 1..64 and --rounds at least 1")

    from vlmcodec import Codec
    from vlmcodec.codec import default_model_path
    from vlmcodec.export.c_decoder import export_c_decoder, find_cmake
    from vlmcodec.image_io import load_image
    from vlmcodec.models.checkpoint import load_model

    work = Path(tempfile.mkdtemp(prefix="c_decoder_tsan_"))
    cmake, flags = find_cmake() or "cmake", "-fsanitize=thread -g -O1"
    build = work / "build"
    subprocess.run([cmake, "-S", str(ROOT), "-B", str(build), "-DVLMCODEC_BUILD_PYTHON=OFF", "-DVLMCODEC_BUILD_TESTS=OFF",
                    # (RelWithDebInfo's own -O2 came after these flags and won: -O1 is its flags too)
                    "-DCMAKE_BUILD_TYPE=RelWithDebInfo", f"-DCMAKE_CXX_FLAGS={flags}", f"-DCMAKE_C_FLAGS={flags}",
                    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-g -O1", "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-g -O1",
                    f"-DCMAKE_SHARED_LINKER_FLAGS={flags}"], check=True, capture_output=True)
    subprocess.run([cmake, "--build", str(build), "--target", "vlmc_decoder", "-j", "2"], check=True, capture_output=True)
    lib_dir = build / "kernels" / "decoder"
    (work / "conc.c").write_text(PROGRAM)
    subprocess.run(["cc", "-std=c11", *flags.split(), str(work / "conc.c"), f"-I{ROOT / 'kernels' / 'decoder'}",
                    f"-L{lib_dir}", "-lvlmc_decoder", "-lpthread", f"-Wl,-rpath,{lib_dir}", "-o", str(work / "conc")],
                   check=True)
    model_file = export_c_decoder(load_model(default_model_path()), work)
    codec, samples = Codec(), sorted((ROOT / "assets" / "samples").glob("*.png"))
    img = load_image(samples[0])
    t0 = time.time()
    for name, (quality, side) in {"full": (50, None), "consumer": (30, 200)}.items():
        prep = codec.prepare(img, quality, side)
        y, z = codec.analyse([prep.pixels], [prep.quality])
        (work / f"{name}.vlmc").write_bytes(codec.entropy_encode(y[0], z[0], prep))
        (work / f"{name}_y.f32").write_bytes(y[0].numpy().tobytes())
        (work / f"{name}_z.f32").write_bytes(z[0].numpy().tobytes())
        (h, w), (ch, cw) = prep.size, prep.pixels.shape[:2]
        run = subprocess.run([str(work / "conc"), str(model_file), str(work / f"{name}.vlmc"), str(a.threads),
                              str(a.rounds), str(work / f"{name}_y.f32"), str(work / f"{name}_z.f32"), str(w), str(h),
                              str(cw), str(ch), str(prep.quality), str(int(codec.pre_edit))],
                             capture_output=True, text=True, env={"TSAN_OPTIONS": "halt_on_error=1"})
        print(run.stdout.strip())
        if run.returncode != 0 or "ThreadSanitizer" in run.stderr:
            print(f"{name}: exit {run.returncode}\n{run.stderr[-4000:]}")
            return 1
    print(f"no ThreadSanitizer report, {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
