import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

# Triton reads TRITON_INTERPRET when it is first imported, so it is decided here, before any test
# module can import it: without a GPU the kernels run under Triton's CPU interpreter in-process.
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import numpy as np
import pytest

from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.models.checkpoint import save_model

# The sdist leaves out results/ (benchmark outputs, ~11 MB); its tests that read them, or check
# the links to them, skip there. In a git checkout they must be there: those tests run.
RESULTS_SHIPPED = (Path(__file__).resolve().parents[1] / ".git").exists()
needs_results = pytest.mark.skipif(not RESULTS_SHIPPED, reason="results/ is not in the sdist (a git checkout has it)")

# One intra-op thread: the tests' tensors are small, and on a loaded machine two OpenMP threads
# spinning against each other can be 10x slower than one.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A small random model (N=16, M=24, 3 quality levels) saved with its tables."""
    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016)))
    with torch.no_grad():  # random g_a gives |y| << 1; widen it so quality visibly changes the rate
        net.g_a[-1].weight.mul_(40.0)
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(net, path)
    return path


@pytest.fixture(scope="session")
def second_model_path(tmp_path_factory):
    """Another small random model: another fingerprint, streams the first cannot decode."""
    torch.manual_seed(1)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016)))
    with torch.no_grad():
        net.g_a[-1].weight.mul_(40.0)
    path = tmp_path_factory.mktemp("models2") / "second.safetensors"
    save_model(net, path)
    return path


@pytest.fixture(scope="session")
def c_decoder_build(tmp_path_factory):
    """The C stream decoder library and its ctest programs, built once per session with cmake
    (the folder holding libvlmc_decoder.so); skips where cmake is missing."""
    from vlmcodec.export.c_decoder import build_c_decoder, find_cmake

    if find_cmake() is None:
        pytest.skip("not available: cmake is not installed (apt install cmake, or pip install cmake)")
    return build_c_decoder(Path(__file__).resolve().parents[1], tmp_path_factory.mktemp("c_decoder_build"), tests=True)


def build_cpp_program(source: str, lib_dir: Path, out: Path) -> Path:
    """``source`` built as C++17 into ``out`` against the C library in ``lib_dir`` (the headers of
    kernels/decoder); skips where there is no C++ compiler, fails with the compiler's output."""
    import shutil

    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("not available: no C++ compiler (c++) to build a program against the library")
    src = out.with_suffix(".cpp")
    src.write_text(source)
    run = subprocess.run([cxx, "-std=c++17", str(src), f"-I{Path(__file__).resolve().parents[1] / 'kernels' / 'decoder'}",
                          f"-L{lib_dir}", "-lvlmc_decoder", f"-Wl,-rpath,{lib_dir}", "-o", str(out)],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture(scope="session")
def tiny_codec(tiny_model_path):
    from vlmcodec import Codec

    return Codec(tiny_model_path)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def smooth_image(rng, h, w):
    """A natural-ish test image: smooth gradients plus mild noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / 17.0), 128 + 90 * np.cos(yy / 11.0), (xx + yy) % 256], axis=2)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def write_train_folder(folder, n=2, h=96, w=128):
    """A training folder of ``n`` smooth h×w PNGs (seeded); returns it."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(smooth_image(rng, h, w)).save(folder / f"{i}.png")
    return folder


def run_bare_script(script, *args, timeout=300):
    """Run ``scripts/<script>`` as on the bare GPU machine: ``python -S`` (neither the editable-install
    finder nor the installed package is seen; the site folders' plain packages — torch, numpy, … —
    come through PYTHONPATH)."""
    root = Path(__file__).resolve().parent.parent
    paths = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run([sys.executable, "-S", str(root / "scripts" / script), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def check_backend_row_bands(backend, monkeypatch, x) -> None:
    """With a low band threshold, a backend's analysis and synthesis run in row bands (each
    network call sees fewer rows than the image has) and give the one-pass values."""
    y_one = backend.analysis(x)
    x_one = backend.synthesis(y_one)
    rows: list[int] = []
    real = backend._run
    monkeypatch.setattr(backend, "_run", lambda net, t: rows.append(t.shape[-2]) or real(net, t))
    monkeypatch.setattr(backend, "band_pixels", 64 * x.shape[-1])
    torch.testing.assert_close(backend.analysis(x), y_one, atol=1e-5, rtol=1e-5)
    assert len(rows) > 1 and max(rows) < x.shape[-2]
    rows.clear()
    torch.testing.assert_close(backend.synthesis(y_one), x_one, atol=1e-5, rtol=1e-5)
    assert len(rows) > 1 and max(rows) < y_one.shape[-2]


@contextmanager
def serving(model_path, clock=None, **options):
    """A CodecServer (``options``) on an Engine of the model at ``model_path``, on a thread, shut
    down on leaving; ``clock``: its rate limiter's (a fake one holds the buckets still)."""
    from vlmcodec import Codec
    from vlmcodec.runtime import Engine, running_server

    with running_server(Engine(Codec(model_path), block=False), **options) as server:
        if clock is not None:
            server.rate_limiter._clock = clock
        yield server
