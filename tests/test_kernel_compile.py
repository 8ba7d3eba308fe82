"""Every Triton kernel, for every GPU autotune config, compiles to PTX and cubin for sm_80 and
sm_90 — without a GPU.  This catches what the interpreter cannot: dot block sizes below 16,
unsupported dtype combinations, shared-memory overflow, ptxas errors.

The compilation runs once per session in a fresh subprocess with the interpreter off (a process
that interprets cannot compile, see tests/conftest_triton.py); each job is then one test.
Default (~30 s cold on 2 busy cores; Triton's cache makes reruns fast): each config with the
kernel's main variant (GDN forward fp16; GDN backward fp32/3xTF32; quantize fp64, as the triton
backend runs it; dequantize fp32 with gain); ``-m slow`` adds the other variants (fp32/bf16/fp16,
IGDN, 64-bit sizes and strides)
with every config.
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

_spec = importlib.util.spec_from_file_location("_vlmcodec_triton_helpers", pathlib.Path(__file__).with_name("conftest_triton.py"))
H = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(H)
H.setup_interpreter()  # this module imports the kernel modules at collection time

_NO_TRITON = H.triton_import_error()
if _NO_TRITON:
    pytest.skip(_NO_TRITON, allow_module_level=True)

_DEFAULT = H.compile_jobs(full=False)
_DEFAULT_IDS = {j["id"] for j in _DEFAULT}
_EXTRA = [j for j in H.compile_jobs(full=True) if j["id"] not in _DEFAULT_IDS]


@pytest.fixture(scope="module")
def default_results(tmp_path_factory):
    return H.compile_in_subprocess(_DEFAULT, tmp_path_factory.mktemp("compile"))


@pytest.fixture(scope="module")
def extra_results(tmp_path_factory):
    return H.compile_in_subprocess(_EXTRA, tmp_path_factory.mktemp("compile_full"))


def _check(job, result):
    assert "error" not in result, f"{job['id']} failed to compile: {result.get('error')}"
    assert result["ptx"] > 0, f"{job['id']}: empty PTX"
    assert result["cubin"] > 0, f"{job['id']}: empty cubin"
    limit = H.SHARED_LIMIT[job["arch"]]
    assert result["shared"] <= limit, f"{job['id']}: {result['shared']} B shared memory > {limit} B on sm_{job['arch']}"


@pytest.mark.parametrize("job", _DEFAULT, ids=[j["id"] for j in _DEFAULT])
def test_compiles_for_gpu(job, default_results):
    _check(job, default_results[job["id"]])


@pytest.mark.slow
@pytest.mark.parametrize("job", _EXTRA, ids=[j["id"] for j in _EXTRA])
def test_compiles_for_gpu_all_variants(job, extra_results):
    _check(job, extra_results[job["id"]])


def test_every_kernel_is_covered():
    """A new kernel in gdn.py / quantize.py must be added to conftest_triton._KERNELS."""
    import triton

    from vlmcodec.kernels import gdn, quantize

    found = set()
    for module in (gdn, quantize):
        for name, obj in vars(module).items():
            if isinstance(obj, (triton.runtime.autotuner.Autotuner, triton.runtime.jit.JITFunction)) or type(obj).__name__ == "InterpretedFunction":
                if name.endswith("_kernel"):
                    found.add(name)
    assert found == set(H._KERNELS), f"kernels without compile jobs: {found - set(H._KERNELS)}"
