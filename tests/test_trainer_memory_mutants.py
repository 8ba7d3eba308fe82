"""The trainer's per-level λ, semantic term, resume, log rows, seeds, schedule and time limit, and
the memory estimate's helpers: behaviour pinned where a mutation-testing run over trainer.py and
memory.py found no test (each test kills a mutant the rest of the suite let through)."""

import csv
import json
import types
import warnings
from dataclasses import replace

import pytest
import torch

import vlmcodec.teacher as teacher_mod
from conftest import write_train_folder
from test_pre_editor import _FakeTeacher
from test_train_divergence import poison_loss
from test_train_levels import _cfg, _levels_seen
from vlmcodec import memory
from vlmcodec.models import MeanScaleHyperprior
from vlmcodec.training import trainer
from vlmcodec.training.trainer import TrainConfig, _schedule_notes, _semantic_term, train


@pytest.fixture
def run_cfg(tmp_path):
    """A tiny run: two levels, batch 1, a constant lr (a resumed run follows the same schedule)."""
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    return TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                       batch=1, steps=4, warmup=1, lr=1e-3, lr_final=1e-3, threads=1, log_every=1, ckpt_every=2)


def _rows(run: TrainConfig) -> list[dict]:
    with open(f"{run.out_dir}/log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _fake_clock(monkeypatch, seconds_per_step: float) -> None:
    """perf_counter reads ``seconds_per_step`` × the steps run so far (rd_loss calls)."""
    calls = {"n": 0}
    real = trainer.rd_loss

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "rd_loss", counting)
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: seconds_per_step * calls["n"],
                                                               time=lambda: 1.0))


# -- the semantic term ---------------------------------------------------------------------------

class _RecordingTeacher(_FakeTeacher):
    """_FakeTeacher that also records whether bf16 autocast was on at each call."""

    def __init__(self):
        super().__init__()
        self.autocast = []

    def __call__(self, img, layers, size=None):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return super().__call__(img, layers, size)


def _term(monkeypatch, **kw):
    fake = _RecordingTeacher()
    monkeypatch.setattr(teacher_mod, "load_teacher", lambda name, device=None: fake)
    return _semantic_term(TrainConfig(teacher="fake", teacher_layers=(1, 2), **kw), torch.device("cpu")), fake


def _pair(noise: float = 0.2):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g)
    return x, x + noise * torch.randn(x.shape, generator=g)


def test_semantic_term_weights_each_distortion_by_its_own_weight(monkeypatch):
    """w_tok·D_tok + w_rank·D_rank: w_tok scales the token term alone, w_rank the rank term alone,
    and a rank term with w_tok 0 is a term (not None)."""
    x, x_hat = _pair()
    tok = _term(monkeypatch, w_tok=1.0)[0](x, x_hat)
    rank = _term(monkeypatch, w_tok=0.0, w_rank=1.0)[0](x, x_hat)
    assert (tok > 0).all() and (rank > 0).all()
    torch.testing.assert_close(_term(monkeypatch, w_tok=3.0)[0](x, x_hat), 3.0 * tok)
    torch.testing.assert_close(_term(monkeypatch, w_tok=0.0, w_rank=2.5)[0](x, x_hat), 2.5 * rank)
    torch.testing.assert_close(_term(monkeypatch, w_tok=3.0, w_rank=2.5)[0](x, x_hat), 3.0 * tok + 2.5 * rank)


def test_semantic_term_sees_the_reconstruction_clamped_to_the_unit_range(monkeypatch):
    x, x_hat = _pair(noise=0.8)
    assert x_hat.min() < 0 and x_hat.max() > 1
    term = _term(monkeypatch, w_tok=1.0, w_rank=1.0)[0]
    assert torch.equal(term(x, x_hat), term(x, x_hat.clamp(0, 1)))


def test_teacher_scale_four_is_the_largest_accepted(monkeypatch):
    """(0, 4]: 4 itself is a scale a direct call takes (a 64-px crop seen at 266 px)."""
    term, fake = _term(monkeypatch, w_tok=1.0, teacher_scale=4.0)
    term(*_pair())
    assert fake.sizes == [(266, 266)] * 2


def test_the_teacher_runs_under_bf16_autocast_only_with_teacher_bf16(monkeypatch):
    term, fake = _term(monkeypatch, w_tok=1.0)
    term(*_pair())
    assert fake.autocast == [False, False]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a CPU without bfloat16 instructions is warned about)
        term, fake = _term(monkeypatch, w_tok=1.0, teacher_bf16=True)
    term(*_pair())
    assert fake.autocast == [True, True]


# -- levels and λ --------------------------------------------------------------------------------

def test_each_item_is_weighted_by_its_own_levels_lambda_and_the_configs_w_pix(tmp_path, monkeypatch):
    """rd_loss gets, for each item, the λ of the level the model coded it at, and w_pix as set."""
    levels = _levels_seen(monkeypatch)
    calls = []
    real = trainer.rd_loss

    def spy(outp, x, lmbdas, w_pix, sem):
        calls.append((lmbdas.tolist(), w_pix))
        return real(outp, x, lmbdas, w_pix, sem)

    monkeypatch.setattr(trainer, "rd_loss", spy)
    cfg = _cfg(tmp_path, steps=3, w_pix=0.5)
    train(cfg, progress=False)
    assert levels == [[0, 1], [2, 3], [0, 1]]
    want = [([pytest.approx(cfg.lmbdas[i]) for i in step], 0.5) for step in levels]
    assert calls == want


# -- resume --------------------------------------------------------------------------------------

def test_a_consumer_scale_run_resumed_trains_as_an_unbroken_one(run_cfg, tmp_path):
    """The consumer sampler's random state is saved and restored: its crops after a resume are
    those an unbroken run draws (the weights equal to the bit)."""
    cfg = replace(run_cfg, consumer_fraction=0.5, consumer_short_side=64, ckpt_every=1)
    train(replace(cfg, out_dir=str(tmp_path / "straight")), progress=False)
    train(replace(cfg, steps=2), progress=False)
    train(cfg, progress=False)  # resumes at step 2
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(f"{cfg.out_dir}/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_a_resume_keeps_the_lines_of_log_jsonl_that_are_not_its_rows(run_cfg):
    """Rows past the checkpoint go; a line that is no row (not JSON, not an object, a step that
    is not a number) stays."""
    train(replace(run_cfg, steps=2), progress=False)
    path = f"{run_cfg.out_dir}/log.jsonl"
    foreign = ["not json\n", '["a", "list"]\n', '{"step": "x"}\n', '{"note": "by hand"}\n']
    with open(path, "a") as f:
        f.writelines(foreign + ['{"step": 3}\n'])
    train(run_cfg, progress=False)  # resumes at step 2
    lines = open(path).read().splitlines(keepends=True)
    assert lines[2:6] == foreign
    assert [json.loads(ln)["step"] for ln in lines[:2] + lines[6:]] == [1, 2, 3, 4]


# -- log rows ------------------------------------------------------------------------------------

def test_a_log_row_is_the_mean_of_its_windows_steps(run_cfg, monkeypatch):
    """bpp, PSNR (of the mean MSE), semantic and aux: each step's figure averaged over the window."""
    real = trainer.rd_loss

    def fixed(*args, **kwargs):
        losses = real(*args, **kwargs)
        return {**losses, "bpp": torch.tensor(0.5), "mse": torch.tensor(0.01), "semantic": torch.tensor(0.25)}

    real_aux = MeanScaleHyperprior.aux_loss
    monkeypatch.setattr(trainer, "rd_loss", fixed)
    monkeypatch.setattr(MeanScaleHyperprior, "aux_loss", lambda self: real_aux(self) * 0 + 3.0)
    train(replace(run_cfg, log_every=2), progress=False)
    rows = _rows(run_cfg)
    assert [r["step"] for r in rows] == ["2", "4"]
    for r in rows:
        assert (r["bpp"], r["psnr"], r["semantic"], r["aux"]) == ("0.5000", "20.000", "0.2500", "3.00")


def test_sec_per_step_counts_the_skipped_steps_of_its_window(run_cfg, monkeypatch):
    """A window of one good and one skipped step took 10 s: 5 s per step (not 10), and the JSON
    line's skipped is a whole number, as in the CSV."""
    poison_loss(monkeypatch, {2})
    _fake_clock(monkeypatch, 5.0)
    train(replace(run_cfg, log_every=2), progress=False)
    rows = _rows(run_cfg)
    assert [(r["step"], r["skipped"], r["sec_per_step"]) for r in rows] == [("2", "1", "5.000"), ("4", "0", "5.000")]
    lines = [json.loads(line) for line in open(f"{run_cfg.out_dir}/log.jsonl")]
    assert [j["skipped"] for j in lines] == [1, 0] and all(type(j["skipped"]) is int for j in lines)


# -- seeds, schedule, time limit, clipping -------------------------------------------------------

def test_the_crop_samplers_draw_from_the_seed_and_the_consumers_from_the_next(run_cfg, monkeypatch):
    seeds = []
    real = trainer.CropSampler

    class Recording(real):
        def __init__(self, *args, seed=0, **kwargs):
            seeds.append(seed)
            super().__init__(*args, seed=seed, **kwargs)

    monkeypatch.setattr(trainer, "CropSampler", Recording)
    train(replace(run_cfg, steps=1, seed=7, consumer_fraction=0.5, consumer_short_side=160), progress=False)
    assert seeds == [7, 8]


def test_an_lr_final_equal_to_the_lr_is_no_mistake(run_cfg):
    """A constant lr (lr_final = lr) does not rise: no note."""
    assert _schedule_notes(replace(run_cfg, lr=1e-3, lr_final=1e-3)) == []


def test_the_time_limit_counts_from_the_runs_start_not_from_the_last_log_row(run_cfg, monkeypatch):
    """10 s a step and a limit of 35 s: the run stops after step 4 (measured from the last log
    row's time it never stopped)."""
    _fake_clock(monkeypatch, 10.0)
    run = replace(run_cfg, steps=10, ckpt_every=100, time_limit_s=35.0)
    train(run, progress=False)
    assert torch.load(f"{run.out_dir}/last.pt", weights_only=True)["step"] == 4
    assert [r["step"] for r in _rows(run)] == ["1", "2", "3", "4"]


def test_a_time_limit_stop_logs_a_last_window_of_skipped_steps_alone(run_cfg, monkeypatch):
    """Steps 4 and 5 skipped, then the time limit: their window still gets its row (skipped 2)."""
    poison_loss(monkeypatch, {4, 5})
    _fake_clock(monkeypatch, 10.0)
    run = replace(run_cfg, steps=10, log_every=3, ckpt_every=100, time_limit_s=45.0)
    train(run, progress=False)
    rows = _rows(run)
    assert [(r["step"], r["skipped"], r["loss"]) for r in rows][1:] == [("5", "2", "")]
    assert rows[0]["step"] == "3" and rows[0]["loss"]


def test_bad_steps_that_are_not_in_a_row_never_stop_the_run(run_cfg, monkeypatch):
    """max_bad_steps counts bad steps in a row: a good step between two bad ones starts again."""
    poison_loss(monkeypatch, {2, 4})
    run = replace(run_cfg, steps=5, max_bad_steps=2)
    train(run, progress=False)
    assert torch.load(f"{run.out_dir}/last.pt", weights_only=True)["step"] == 5
    assert [r["skipped"] for r in _rows(run)] == ["0", "1", "0", "1", "0"]


def test_clip_grad_zero_trains_without_clipping(run_cfg):
    """clip_grad 0 turns clipping off (clipping to a norm of 0 left every weight as initialised)."""
    run = replace(run_cfg, steps=1, clip_grad=0.0)
    torch.manual_seed(run.seed)
    init = MeanScaleHyperprior(run.model_config()).state_dict()
    train(run, progress=False)
    trained = torch.load(f"{run.out_dir}/last.pt", weights_only=True)["model"]
    assert not torch.equal(trained["g_s.0.weight"], init["g_s.0.weight"])


# -- memory estimate helpers ---------------------------------------------------------------------

def test_the_pre_editors_band_is_at_most_the_image():
    """An image lower than a band and its halo: the band is the image (260 rows of 100 were counted)."""
    assert memory.pre_editor_band_pixels(256, 100, 50) == 100 * 50
    assert memory.pre_editor_band_pixels(256, 1000, 50) == (256 + memory.PRE_EDITOR_HALO_ROWS) * 50


def test_a_band_larger_than_the_image_costs_one_pass():
    pixels = 1000
    for band in (pixels, 5 * pixels):
        assert memory.decode_cost(band, pixels) == (memory.DECODE_BANDED_BYTES_PER_PIXEL,
                                                    pixels * (memory.DECODE_BYTES_PER_PIXEL -
                                                              memory.DECODE_BANDED_BYTES_PER_PIXEL))
        bpp, base = memory.decode_cost(band, pixels)
        assert memory.needed(pixels, bpp, base_bytes=base) == memory.needed(pixels, memory.DECODE_BYTES_PER_PIXEL)


def test_the_pre_editors_head_in_bands_with_g_a_in_one_pass_has_its_own_cost():
    """A backend without row bands (g_a whole) and the pre-editor's head in bands: 260 B per pixel."""
    assert memory.encode_cost(True, 1000, None, 10**6) == (memory.ENCODE_PRE_BANDED_BYTES_PER_PIXEL, 0)
    assert memory.encode_cost(True, None, None, 10**6) == (memory.ENCODE_BYTES_PER_PIXEL[True], 0)


@pytest.mark.parametrize("coded, per_pixel", [((256, 341), 15.0), ((1500, 2000), 21.0), ((2800, 3733), 43.4),
                                              ((2999, 3999), 48.0)])
def test_downscaling_is_estimated_at_the_measured_bytes_per_original_pixel(coded, per_pixel):
    """The figures the DOWNSCALE_* comment gives for 4000×3000 originals (measured 15.0 / 21.0 /
    43.3 / 48.0): the original's float copy, then the largest of its uint8 copy, the
    interpolation's passes and the rounding's copies."""
    assert round(memory.downscale_bytes((3000, 4000), coded) / (3000 * 4000), 1) == per_pixel


def test_downscaling_costs_nothing_at_the_same_size_and_the_same_for_a_transposed_image():
    assert memory.downscale_bytes((3000, 4000), (3000, 4000)) == 0
    # the interpolation's intermediate is the larger of its two one-axis passes, whichever runs first
    for original, coded in (((1000, 1001), (500, 500)), ((3000, 4000), (1500, 2001))):
        flipped = memory.downscale_bytes(original[::-1], coded[::-1])
        assert memory.downscale_bytes(original, coded) == flipped


def test_a_decode_batch_restored_to_the_original_size_counts_every_output(monkeypatch, rng, tiny_model_path):
    """memory_needed(decoding=True) of 3 streams coded at a consumer's scale is the figure their
    decode_batch checks: each of the 3 resized outputs counted, not one."""
    from conftest import smooth_image
    from vlmcodec import Codec
    from vlmcodec.errors import ResourceError

    codec = Codec(tiny_model_path)
    small = codec.encode(smooth_image(rng, 100, 130), 50, short_side=32)
    need = codec.memory_needed(100, 130, 3, decoding=True, short_side=32)
    assert need - codec.memory_needed(100, 130, 1, decoding=True, short_side=32) >= 2 * 3 * 100 * 130
    monkeypatch.setattr(memory, "available_memory", lambda: need)
    assert len(codec.decode_batch([small] * 3)) == 3
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
    with pytest.raises(ResourceError):
        codec.decode_batch([small] * 3)


def test_a_whole_batch_onnxruntime_encode_above_the_attention_window_is_not_charged_global_attention(tmp_path):
    """Above the window (more than 64 tokens a side) the pre-editor attends in windows: a whole-batch
    encode's further images cost "encode"'s bytes per pixel, not "encode-global"'s."""
    pytest.importorskip("onnxruntime")
    from test_backend_onnx import _pre_editor_codecs
    from vlmcodec import Codec

    co = _pre_editor_codecs(tmp_path)[1]
    whole = Codec(co.loaded, backend="onnxruntime", backend_options={"item_by_item": False})
    ph = pw = 1152  # 1100 px padded; 72 tokens a side
    assert whole.model.pre_editor.windowed_at(ph, pw)
    banded = whole._network_band_pixels(ph, pw) is not None
    first, more, base = memory.onnxruntime_cost("encode", ph * pw, False, banded, item_by_item=False)
    assert more == memory.ONNXRUNTIME_BATCH_BYTES_PER_PIXEL["encode"]
    assert whole.memory_needed(1100, 1100, 2) == memory.needed(ph * pw, first, 2, more, base)
