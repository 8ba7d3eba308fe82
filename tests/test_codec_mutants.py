"""Codec, backends, devices, forks and console helpers: tests from a mutation run over their core
API (each kills a change the rest of the suite let through: batching keys, quality lists, stage
timing, threads, the pre-edit switch, chunk counts, shared-decoder streams, argument checks)."""

import types

import numpy as np
import pytest
import torch

from vlmcodec import Codec
from vlmcodec import codec as codec_module
from vlmcodec.bitstream import container
from vlmcodec.errors import BitstreamError, ConfigError, ImageError

from conftest import smooth_image


@pytest.fixture
def one_torch_thread():
    """Torch back on the suite's one thread after a test that made a codec of more."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


def test_y_chunk_count_is_capped_at_max_y_chunks():
    per, cap = codec_module.SYMBOLS_PER_CHUNK, codec_module.MAX_Y_CHUNKS
    assert codec_module.num_chunks_for(1) == 1
    assert codec_module.num_chunks_for(per) == 1
    assert codec_module.num_chunks_for(per + 1) == 2
    assert codec_module.num_chunks_for(cap * per) == cap
    assert codec_module.num_chunks_for(cap * per + 1) == cap
    assert codec_module.num_chunks_for(10 * cap * per) == cap


def test_encode_batch_refuses_more_qualities_than_images(tiny_codec, rng):
    img = smooth_image(rng, 32, 32)
    with pytest.raises(ConfigError, match="got 1 images but 2 qualities"):
        tiny_codec.encode_batch([img], [50, 60])
    with pytest.raises(ConfigError, match="got 2 images but 1 qualities"):
        tiny_codec.encode_batch([img, img], [50])


def test_encode_batch_of_mixed_sizes_at_one_quality_equals_single_encodes(tiny_codec, rng):
    a, b, c = smooth_image(rng, 64, 64), smooth_image(rng, 70, 90), smooth_image(rng, 60, 50)  # c pads as a
    streams = tiny_codec.encode_batch([a, b, c], 50)
    assert streams == [tiny_codec.encode(a, 50), tiny_codec.encode(b, 50), tiny_codec.encode(c, 50)]
    outs = tiny_codec.decode_batch(streams)
    assert [o.shape for o in outs] == [(64, 64, 3), (70, 90, 3), (60, 50, 3)]


def test_synthesis_output_with_an_infinity_is_a_corrupt_stream(tiny_codec, rng, monkeypatch):
    data = tiny_codec.encode(smooth_image(rng, 32, 32), 50)
    real = tiny_codec.backend.synthesis

    def inf_at_one_pixel(y_hat):
        x = real(y_hat)
        x[0, 0, 0, 0] = float("inf")  # the minimum stays finite: only the maximum is not
        return x

    monkeypatch.setattr(tiny_codec.backend, "synthesis", inf_at_one_pixel)
    with pytest.raises(BitstreamError, match="not finite"):
        tiny_codec.decode(data)


def test_stage_times_add_up_over_repeated_stages(tiny_model_path, rng, monkeypatch):
    ticks = iter(range(1000))
    monkeypatch.setattr(codec_module, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    codec = Codec(tiny_model_path, threads=1)
    data = codec.encode(smooth_image(rng, 32, 32), 50)
    codec.stage_times = {}
    codec.decode_batch([data, data, data])  # the CPU backend synthesizes item by item: 3 g_s stages
    # each stage's start and end are consecutive ticks: 1 per stage run
    assert codec.stage_times["g_s"] == 3.0
    assert codec.stage_times["z coding"] == 3.0
    assert codec.stage_times["y coding"] == 3.0


def test_codec_threads_sets_entropy_coding_threads(tiny_model_path, one_torch_thread):
    assert Codec(tiny_model_path, threads=3).threads == 3
    assert Codec(tiny_model_path, threads=1).threads == 1


def test_codec_threads_apply_before_the_model_is_loaded(tiny_model_path, monkeypatch, one_torch_thread):
    seen = []
    real = codec_module.load_model

    def recording(path):
        seen.append(torch.get_num_threads())
        return real(path)

    monkeypatch.setattr(codec_module, "load_model", recording)
    Codec(tiny_model_path, threads=2)
    assert seen == [2]


def test_pre_edit_is_off_for_a_model_without_a_pre_editor(tiny_model_path, rng):
    codec = Codec(tiny_model_path, pre_edit=True)
    assert codec.model.pre_editor is None and codec.pre_edit is False
    header = container.unpack(codec.encode(smooth_image(rng, 32, 32), 50))[0]
    assert header.flags & container.FLAG_PRE_EDITED == 0


@pytest.fixture(scope="module")
def pre_edit_model_path(tmp_path_factory):
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import save_model

    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016), pre_editor=True))
    path = tmp_path_factory.mktemp("pre") / "pre.safetensors"
    save_model(net, path)
    return path


def test_pre_edit_false_never_runs_the_pre_editor(pre_edit_model_path, rng, monkeypatch):
    codec = Codec(pre_edit_model_path, pre_edit=False)
    assert codec.model.pre_editor is not None and codec.pre_edit is False

    def refuse(x):
        raise AssertionError("the pre-editor ran with pre_edit=False")

    monkeypatch.setattr(codec.backend, "pre_edit", refuse)
    data = codec.encode(smooth_image(rng, 32, 32), 50)
    assert container.unpack(data)[0].flags & container.FLAG_PRE_EDITED == 0


def test_a_stream_with_two_z_chunks_is_refused_by_its_chunk_count(tiny_codec, rng):
    header, z_chunks, y_chunks = container.unpack(tiny_codec.encode(smooth_image(rng, 32, 32), 50))
    bad = container.pack(header, z_chunks + z_chunks, y_chunks)
    with pytest.raises(BitstreamError, match="chunk count does not match"):
        tiny_codec.decode(bad)


def test_a_model_sharing_a_decoder_decodes_its_own_streams(tiny_model_path, tmp_path, rng):
    from vlmcodec.models.checkpoint import load_model, save_model

    a = load_model(tiny_model_path)
    net = a.model
    with torch.no_grad():
        net.g_a[0].weight.mul_(1.5)  # another encoder, the same decoder
    path = tmp_path / "b.safetensors"
    save_model(net, path, decodes_as=a.identity, require_shared=True)
    codec_a, codec_b = Codec(tiny_model_path), Codec(path)
    assert codec_b.fingerprint != codec_a.fingerprint and codec_b.stream_fingerprint == codec_a.fingerprint
    img = smooth_image(rng, 32, 32)
    data = codec_b.encode(img, 50)
    assert container.unpack(data)[0].fingerprint == codec_a.fingerprint
    assert np.array_equal(codec_b.decode(data), codec_a.decode(data))
    assert codec_b.reads(codec_a.fingerprint) and codec_b.reads(codec_b.fingerprint)


def test_decode_batch_refuses_a_four_dimensional_array(tiny_codec):
    with pytest.raises(BitstreamError, match="decode_batch takes a sequence of streams"):
        tiny_codec.decode_batch(np.zeros((2, 8, 8, 3), dtype=np.uint8))


def test_batch_calls_refuse_one_pil_image_with_the_single_call_named(tiny_codec):
    from PIL import Image

    im = Image.new("RGB", (8, 8))
    with pytest.raises(ImageError, match=r"got Image: for one, use encode\(\)"):
        tiny_codec.encode_batch(im, 50)
    with pytest.raises(BitstreamError, match=r"got Image: for one, use decode\(\)"):
        tiny_codec.decode_batch(im)


def test_threads_in_backend_options_is_refused_as_codecs_own(tiny_model_path):
    with pytest.raises(ConfigError, match=r"threads: Codec's own argument \(--threads"):
        Codec(tiny_model_path, threads=1, backend_options={"threads": 2})
    with pytest.raises(ConfigError, match="device: Codec's own argument"):
        Codec(tiny_model_path, device="cpu", backend_options={"device": "cpu"})


def test_encode_to_size_rounds_max_quality_to_the_streams_steps(tiny_codec, rng):
    img = smooth_image(rng, 32, 32)
    data = tiny_codec.encode_to_size(img, 10**6, max_quality=77.777)
    assert container.unpack(data)[0].quality == 77.78
    assert data == tiny_codec.encode(img, 77.78)


def test_budget_error_hint_uses_min_quality_as_the_stream_rounds_it(tiny_codec, rng):
    from vlmcodec.errors import BudgetError

    img = smooth_image(rng, 16, 24)  # short side 16: no smaller short_side either
    with pytest.raises(BudgetError) as e:  # 0.004 is quality 0.00 in a stream: nothing lower to try
        tiny_codec.encode_to_size(img, 1, min_quality=0.004)
    assert str(e.value).startswith("even quality 0 needs ")
    assert str(e.value).endswith(" bytes, over the budget of 1 bytes; this model makes no smaller stream of this image")


def test_refine_steps_of_a_call_zero_overrides_the_codecs_setting(tiny_model_path):
    codec = Codec(tiny_model_path, refine=2)
    assert codec.refine_steps(None) == 2
    assert codec.refine_steps(0) == 0
    assert codec.refine_steps(1) == 1
    with pytest.raises(ConfigError):
        codec.refine_steps(-1)


def test_encode_to_size_refuses_min_quality_just_above_max_quality(tiny_codec, rng):
    with pytest.raises(ConfigError, match="min_quality 60 is above max_quality 59.5"):
        tiny_codec.encode_to_size(smooth_image(rng, 16, 16), 10**6, min_quality=60, max_quality=59.5)


def test_y_entropy_coding_runs_on_the_codecs_threads(tiny_model_path, rng, monkeypatch, one_torch_thread):
    from vlmcodec.kernels import rans

    codec = Codec(tiny_model_path, threads=3)
    data = codec.encode(smooth_image(rng, 32, 32), 50)
    calls = []
    real_decode = rans.decode

    def recording(chunks, indexes, table, threads=1):
        calls.append(threads)
        return real_decode(chunks, indexes, table, threads=threads)

    monkeypatch.setattr(rans, "decode", recording)
    codec.decode(data)
    assert calls == [1, 3]  # z: one chunk, one thread; y: the codec's threads


def test_torch_backend_runs_a_batch_item_by_item_on_the_cpu(tiny_model_path):
    from vlmcodec.backends import TorchBackend
    from vlmcodec.models.checkpoint import load_model

    backend = TorchBackend(load_model(tiny_model_path).model)
    seen = []

    def net(t):
        seen.append(tuple(t.shape))
        return t * 2

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = backend._run(net, x)
    assert seen == [(1, 3, 4, 4), (1, 3, 4, 4)]
    assert torch.equal(out, x * 2) and out.is_contiguous()
    assert backend.item_by_item is True


def test_torch_backend_clamps_the_pre_editors_output_to_0_1(pre_edit_model_path):
    from vlmcodec.backends import TorchBackend
    from vlmcodec.models.checkpoint import load_model

    backend = TorchBackend(load_model(pre_edit_model_path).model)
    backend.pre = lambda t: t * 3 - 1
    x = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = backend.pre_edit(x)
    assert torch.equal(out[0, 0, 0], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_torch_backend_optimize_false_runs_the_modules_as_trained(tiny_model_path):
    from vlmcodec.backends import TorchBackend
    from vlmcodec.layers import GDN, FoldedGDN, SubPixelConv
    from vlmcodec.models.checkpoint import load_model

    model = load_model(tiny_model_path).model
    plain = TorchBackend(model, optimize=False)
    assert plain.optimize is False
    assert plain.g_a is model.g_a and plain.h_a is model.h_a and plain.g_s is model.g_s
    fast = TorchBackend(model, optimize=True)
    kinds = [type(m) for m in fast.g_s]
    assert SubPixelConv in kinds and FoldedGDN in kinds and GDN not in kinds
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in fast.g_s)
    assert any(isinstance(m, FoldedGDN) for m in fast.g_a)


def test_create_backend_sets_torchs_threads(tiny_model_path, one_torch_thread):
    from vlmcodec.backends import create_backend
    from vlmcodec.models.checkpoint import load_model

    create_backend("torch", load_model(tiny_model_path).model, threads=2)
    assert torch.get_num_threads() == 2


class _Stop(Exception):
    pass


def _triton_with(monkeypatch, available: bool, interpreted: bool, cuda: bool) -> list:
    """TritonBackend's choices with a fake kernel package and CUDA state: the device it passes to
    the torch backend (recorded, then stopped) or its BackendUnavailableError."""
    from vlmcodec.backends import triton_backend as tb

    utils = types.SimpleNamespace(is_triton_available=lambda: available, triton_language_interpreted=lambda: interpreted)
    monkeypatch.setattr(tb, "_kernels", lambda: (utils, None, None))
    monkeypatch.setattr(tb.torch.cuda, "is_available", lambda: cuda)
    seen = []

    def record(self, model, device="cpu", threads=None, optimize=True):
        seen.append(device)
        raise _Stop

    monkeypatch.setattr(tb.TorchBackend, "__init__", record)
    return seen


def test_triton_backend_without_the_package_says_so(monkeypatch):
    from vlmcodec.backends.triton_backend import TritonBackend
    from vlmcodec.errors import BackendUnavailableError

    _triton_with(monkeypatch, available=False, interpreted=False, cuda=True)
    with pytest.raises(BackendUnavailableError, match=r"triton backend not available: the triton package is not "
                                                      r"installed \(pip install triton=="):
        TritonBackend(None)


def test_triton_backend_picks_cuda_when_there_is_a_gpu_and_cpu_only_interpreted(monkeypatch):
    from vlmcodec.backends.triton_backend import TritonBackend
    from vlmcodec.errors import BackendUnavailableError

    seen = _triton_with(monkeypatch, available=True, interpreted=False, cuda=True)
    with pytest.raises(_Stop):
        TritonBackend(None)
    assert seen == ["cuda"]
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU; on CPU it runs only under TRITON_INTERPRET=1"):
        TritonBackend(None, device="cpu")  # an explicit cpu stays cpu, beside a GPU too
    seen = _triton_with(monkeypatch, available=True, interpreted=True, cuda=False)
    with pytest.raises(_Stop):
        TritonBackend(None)
    assert seen == ["cpu"]


def test_torch_device_checks_the_cuda_index_against_the_count(monkeypatch):
    from vlmcodec.devices import torch_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert torch_device("cuda:1", "device") == torch.device("cuda:1")
    assert torch_device("cuda", "device") == torch.device("cuda")
    with pytest.raises(ConfigError, match=r"device 'cuda:2': only 2 CUDA device\(s\)"):
        torch_device("cuda:2", "device")


def test_torch_device_errors_name_the_setting(monkeypatch):
    from vlmcodec.devices import torch_device
    from vlmcodec.errors import BackendUnavailableError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"hs_device 'cuda' not available: torch sees no CUDA GPU"):
        torch_device("cuda", "hs_device")
    with pytest.raises(ConfigError, match=r"^device must be 'cpu', 'cuda' or 'cuda:N', got 'meta'$"):
        torch_device("meta", "device")
    with pytest.raises(ConfigError, match=r"^teacher must be 'cpu', got 'cuda'$"):
        torch_device("cuda", "teacher", kinds=("cpu",))
    with pytest.raises(ConfigError, match=r"^teacher device 'gpu0': "):
        torch_device("gpu0", "teacher device", kinds=None)
    assert torch_device("cpu", "device") == torch.device("cpu")
    assert torch_device("meta", "x", kinds=None) == torch.device("meta")  # a tensor can be made there


def test_torch_device_refuses_a_device_type_this_machine_lacks(monkeypatch):
    from vlmcodec.devices import torch_device
    from vlmcodec.errors import BackendUnavailableError

    def no_such_device(*args, device=None, **kw):
        raise RuntimeError("PyTorch is not linked with support for xpu devices\nmore")

    monkeypatch.setattr(torch, "empty", no_such_device)
    with pytest.raises(BackendUnavailableError,
                       match=r"^teacher device 'xpu' not available: PyTorch is not linked with support for xpu devices$"):
        torch_device("xpu", "teacher device", kinds=None)


def _in_child(check) -> int:
    """The exit status of a forked child that runs ``check()`` (True: 0) and exits at once."""
    import os

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = 0 if check() else 2
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_fork_safe_lock_held_at_fork_is_free_in_the_child():
    from vlmcodec.forks import fork_safe_lock

    lock = fork_safe_lock()
    with lock:
        assert _in_child(lambda: lock.acquire(timeout=2)) == 0
    assert not lock.locked()


def test_a_fork_waits_for_another_threads_fork_waits_block_and_its_nested_ones(monkeypatch):
    import threading
    import time as _time

    from vlmcodec import forks

    monkeypatch.setattr(forks, "FORK_WAIT_S", 3.0)  # (a nested block left waiting for the fork would hold it so long)
    events, inside = [], threading.Event()

    def worker():
        with forks.fork_waits():
            inside.set()
            _time.sleep(0.3)  # the fork below is waiting by now
            with forks.fork_waits():  # nested: goes on while a fork waits (it waits for the outer)
                events.append("nested")
            events.append("outer end")

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    # the child's copy of events: both blocks had ended when the fork went on
    assert _in_child(lambda: events == ["nested", "outer end"]) == 0
    t.join(5)
    assert events == ["nested", "outer end"]


def test_a_child_forked_meanwhile_can_start_fork_waits_blocks():
    import threading

    from vlmcodec import forks

    def child_check():
        t = threading.Thread(target=lambda: forks.fork_waits().__enter__(), daemon=True)
        t.start()
        t.join(3)
        return not t.is_alive()

    assert _in_child(child_check) == 0


def test_env_switch_reads_off_words_with_spaces_and_warns_of_others(monkeypatch):
    import warnings

    from vlmcodec.console import env_switch
    from vlmcodec.errors import VlmcodecWarning

    for off in ("0", "false", "NO", "off", " Off "):
        monkeypatch.setenv("VLMC_TEST_SWITCH", off)
        assert env_switch("VLMC_TEST_SWITCH") is False, off
    for on in ("1", "true", "Yes", " on", ""):
        monkeypatch.setenv("VLMC_TEST_SWITCH", on)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert env_switch("VLMC_TEST_SWITCH") is True, on
    monkeypatch.delenv("VLMC_TEST_SWITCH")
    assert env_switch("VLMC_TEST_SWITCH") is True
    monkeypatch.setenv("VLMC_TEST_SWITCH", "disable")
    with pytest.warns(VlmcodecWarning, match=r"VLMC_TEST_SWITCH='disable' is neither on .* taken as on"):
        assert env_switch("VLMC_TEST_SWITCH") is True


def test_is_terminal_is_false_for_a_closed_stream():
    import io

    from vlmcodec.console import is_terminal

    s = io.StringIO()
    s.close()
    assert is_terminal(s) is False
    assert is_terminal(object()) is False


def test_backend_option_needs_an_identifier_key():
    import argparse

    from vlmcodec.console import backend_option

    for bad in ("=5", "1x=2", "a b=1", "novalue"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
            backend_option(bad)
    key, value = backend_option(" graphs =007")
    assert key == "graphs" and value == 7 and value.text == "007"
    # the value's text as given, spaces too, as a value that is no number is returned
    assert backend_option("graphs= 007")[1].text == " 007" and backend_option("graphs= a")[1] == " a"
    assert backend_option("x=TRUE") == ("x", True) and backend_option("x=none") == ("x", None)


def test_encode_batch_takes_a_generator_of_images(tiny_codec, rng):
    a, b = smooth_image(rng, 32, 32), smooth_image(rng, 20, 40)
    assert tiny_codec.encode_batch((im for im in (a, b)), [40, 60]) == [tiny_codec.encode(a, 40),
                                                                          tiny_codec.encode(b, 60)]


def test_decoding_ignores_the_codecs_encode_short_side(tiny_model_path, rng):
    img = smooth_image(rng, 64, 96)
    codec = Codec(tiny_model_path, short_side=32)
    data = codec.encode(img, 50)  # coded at 32x48
    header = container.unpack(data)[0]
    assert (header.height, header.width, header.coded_hw) == (64, 96, (32, 48))
    assert codec.decode(data).shape == (64, 96, 3)
    assert codec.entropy_decode(data).out_hw == (64, 96)
    assert codec.decode(data, short_side=32).shape == (32, 48, 3)
    assert codec.entropy_decode(data, 32).out_hw == (32, 48)


def test_an_empty_model_path_is_the_default_model():
    assert Codec("", threads=1).fingerprint == Codec(None, threads=1).fingerprint


def test_a_bad_device_is_refused_in_codecs_own_words(tiny_model_path):
    with pytest.raises(ConfigError, match=r"^device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'$"):
        Codec(tiny_model_path, device="gpu")


def test_a_y_chunk_with_a_broken_start_fails_before_the_exact_h_s_runs(tiny_codec, rng, monkeypatch):
    header, z_chunks, y_chunks = container.unpack(tiny_codec.encode(smooth_image(rng, 32, 32), 50))
    bad = container.pack(header, z_chunks, [b"\x00" * 4 + y_chunks[0][4:]] + y_chunks[1:])  # state 0: out of range

    def refuse(z_hat):
        raise AssertionError("the exact h_s ran on a stream whose y chunks are plainly broken")

    monkeypatch.setattr(tiny_codec, "exact_hs", refuse)
    with pytest.raises(BitstreamError, match="corrupt stream: y payload does not decode .*initial state out of range"):
        tiny_codec.decode(bad)


def test_encode_quality_none_is_the_default_quality(tiny_codec, rng):
    img = smooth_image(rng, 32, 32)
    data = tiny_codec.encode(img, None)
    assert container.unpack(data)[0].quality == 75.0 and data == tiny_codec.encode(img, 75)
