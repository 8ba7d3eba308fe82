"""Model files that are odd at their edges (edited metadata, tables, dtypes), the CompressAI
import and the widening script: each is a ConfigError with a clear message, never a traceback,
and ``describe_model`` (``vlmcodec info``) refuses what ``load_model`` refuses."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import smooth_image
from vlmcodec.cli import main
from vlmcodec.errors import ConfigError
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.models.checkpoint import (describe_model, fingerprint_of, load_model, not_finite, read_safetensors,
                                        save_model, stored_dtype)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "widen_encoder.py"


def _net() -> MeanScaleHyperprior:
    torch.manual_seed(0)
    return MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05))).eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("edges") / "tiny.safetensors"
    save_model(_net(), path)
    return path


def _rewrite(src: Path, dst: Path, tensors=None, meta=None, refingerprint: bool = True) -> Path:
    """A copy of model file ``src`` with its tensors and metadata edited (``tensors(dict)``,
    ``meta(dict)``), its fingerprint recomputed: an edit the fingerprint does not catch."""
    t, m = read_safetensors(src)
    t, m = dict(t), dict(m)
    if tensors:
        tensors(t)
    if meta:
        meta(m)
    if refingerprint:
        m["fingerprint"] = fingerprint_of(ModelConfig.from_dict(json.loads(m["config"])), t).hex()
    save_file({k: v.contiguous() for k, v in t.items()}, str(dst), metadata=m)
    return dst


def _cut_table(name: str, rows: int):
    def edit(t):
        for part in ("cdf", "cdf_length", "offsets"):
            t[f"tables.{name}.{part}"] = t[f"tables.{name}.{part}"][:rows].clone()
    return edit


# -- tables, tensors and dtypes: load_model and describe_model refuse the same files -----------------


@pytest.mark.parametrize("edit, message", [
    (_cut_table("z", 4), r"bad z CDF tables .*tables.z.cdf is \(4, \d+\), its model needs 8 rows"),
    (_cut_table("y", 10), r"bad y CDF tables .*tables.y.cdf is \(10, \d+\), its model needs 64 rows"),
    (lambda t: t.pop("tables.z.cdf"), r"CDF tables missing \('tables.z.cdf'\)"),
    (lambda t: t.pop("gain"), r"weights do not match the architecture \(missing \['gain'\]"),
    (lambda t: t.__setitem__("foo.bar", torch.zeros(3)), r"unexpected \['foo.bar'\]"),
    (lambda t: t.__setitem__("tables.x.cdf", torch.zeros(3, dtype=torch.int32)), r"unexpected \['tables.x.cdf'\]"),
    (lambda t: t.__setitem__("g_s.0.weight", t["g_s.0.weight"] > 0), "g_s.0.weight is stored as bool"),
    (lambda t: t.__setitem__("g_s.0.weight", (t["g_s.0.weight"] * 100).to(torch.int64)), "stored as int64"),
    (lambda t: t.__setitem__("gaussian_conditional.scale_table", t["gaussian_conditional.scale_table"].to(torch.int32)),
     "gaussian_conditional.scale_table is stored as int32"),
])
def test_describe_model_refuses_what_load_model_refuses(tmp_path, capsys, model_file, edit, message):
    """CDF tables with fewer rows than the model codes (z: N, y: the scale table) loaded, then
    encoding failed with the rANS coder's ValueError and decoding said "corrupt stream"; missing
    tables or tensors and extra tensors were refused by load_model while ``vlmcodec info`` called
    the file fine; integer and bool weights loaded as weights."""
    path = _rewrite(model_file, tmp_path / "edited.safetensors", tensors=edit)
    for read in (load_model, describe_model):
        with pytest.raises(ConfigError, match=message):
            read(path)
    assert main(["info", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_float8_weights_are_refused_and_not_finite_reads_them(tmp_path, model_file):
    """A float8 tensor raised torch's NotImplementedError ("sum_cpu" not implemented) out of the
    finiteness check."""
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("no float8 in this torch")
    path = _rewrite(model_file, tmp_path / "fp8.safetensors",
                    tensors=lambda t: t.__setitem__("g_s.0.weight", t["g_s.0.weight"].to(torch.float8_e4m3fn)))
    for read in (load_model, describe_model):
        with pytest.raises(ConfigError, match="g_s.0.weight is stored as float8_e4m3fn"):
            read(path)
    nan8 = torch.tensor([1.0, float("nan")]).to(torch.float8_e4m3fn)
    assert not_finite({"ok": torch.ones(2).to(torch.float8_e4m3fn), "nan": nan8}) == ["nan"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_model_keeps_its_stored_dtype_and_its_decoder_when_saved_in_it(tmp_path, dtype):
    """``LoadedModel.dtype``: the dtype a file stores its weights in; saved in it, a model's decoder
    is the one it was (the decoder digest covers dtypes), so it can claim that model's streams."""
    path = tmp_path / "m.safetensors"
    save_model(_net(), path, dtype=dtype)
    loaded = load_model(path)
    assert loaded.dtype == dtype and describe_model(path)["dtypes"] == [str(dtype).removeprefix("torch.")]
    assert loaded.model.g_s[0].weight.dtype == torch.float32  # (computed in float32)
    again = tmp_path / "again.safetensors"
    save_model(loaded.model, again, dtype=loaded.dtype, decodes_as=loaded.identity, require_shared=True)
    assert load_model(again).fingerprint == loaded.fingerprint


# -- metadata: the architecture and the lineage ---------------------------------------------------------------


@pytest.mark.parametrize("config, message", [
    ('{"N": 8, "M": 12, "lmbdas": ' + "[" * 100000 + "]" * 100000 + "}", "maximum recursion depth"),
    (json.dumps({"N": 8, "M": 12, "num_levels": 2, "lmbdas": [10**400, 1]}), "an integer beyond float's range"),
    (json.dumps({"N": 8, "M": 12, "num_levels": 2, "lmbdas": "55"}), "lmbdas must be finite numbers.*'55'"),
    (json.dumps({"N": 8, "M": 12, "num_levels": 2, "lmbdas": {"1": 2}}), "lmbdas must be finite numbers"),
    (json.dumps({"N": 8, "M": 12, "num_levels": 2, "lmbdas": [True, 1]}), r"lmbdas must be finite .*\[True, 1\]"),
])
def test_an_architecture_json_python_cannot_take_is_a_config_error(tmp_path, capsys, model_file, config, message):
    """JSON nested 10^5 deep (RecursionError) and a λ beyond float's range (OverflowError) escaped
    config_of; lmbdas of another JSON type were coerced: "55" read as (5.0, 5.0), {"1": 2} as
    (1.0,), true as 1.0."""
    path = _rewrite(model_file, tmp_path / "cfg.safetensors", meta=lambda m: m.__setitem__("config", config),
                    refingerprint=False)
    for read in (load_model, describe_model):
        with pytest.raises(ConfigError, match=f"unreadable architecture in its metadata \\(.*{message}"):
            read(path)
    assert main(["info", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_model_config_from_dict_takes_only_a_list_of_numbers_as_lmbdas():
    assert ModelConfig.from_dict({"N": 8, "M": 12, "lmbdas": [1, 0.5]}).lmbdas == (1.0, 0.5)
    for bad in ("55", {"1": 2}, [True], [None], 3, [10**400]):
        with pytest.raises(ConfigError, match="lmbdas must be finite numbers"):
            ModelConfig.from_dict({"N": 8, "M": 12, "lmbdas": bad})
    with pytest.raises(ConfigError, match="lmbdas"):
        ModelConfig(lmbdas=(10**400,))


@pytest.mark.parametrize("lineage", ["5", '"a"', "[1]", '{"file": "a"}', "not json"])
def test_a_lineage_that_is_no_list_of_stages_is_a_config_error_naming_it(tmp_path, capsys, model_file, lineage):
    """``train_lineage`` (metadata the fingerprint does not cover) of valid JSON but no list gave
    TypeError tracebacks from ``vlmcodec info``, a training run's init_from and the widening
    script."""
    from vlmcodec.training.weights import lineage_of, load_weights_into

    path = _rewrite(model_file, tmp_path / "lineage.safetensors",
                    meta=lambda m: m.__setitem__("train_lineage", lineage))
    message = "train_lineage in its metadata"
    with pytest.raises(ConfigError, match=message):
        describe_model(path)
    with pytest.raises(ConfigError, match=message):
        load_weights_into(_net(), path)
    with pytest.raises(ConfigError, match=message):
        lineage_of(read_safetensors(path)[1], path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    run = subprocess.run([sys.executable, str(SCRIPT), str(path), "16", "-o", str(tmp_path / "w.safetensors")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_a_null_lineage_is_none(tmp_path, model_file):
    from vlmcodec.training.weights import lineage_of

    path = _rewrite(model_file, tmp_path / "null.safetensors", meta=lambda m: m.__setitem__("train_lineage", "null"))
    assert describe_model(path)["lineage"] == []
    assert [st["file"] for st in lineage_of(read_safetensors(path)[1], path)] == ["null.safetensors"]


# -- widening ---------------------------------------------------------------------------------------------------


def test_widen_encoder_keeps_an_fp16_models_decoder_and_says_what_its_streams_carry(tmp_path):
    """The script saved in float32 whatever the source: the widened copy of an fp16 model had
    another decoder digest (it covers dtypes), so no sharing was recorded, yet it printed that its
    streams carried the source's fingerprint."""
    src = tmp_path / "f16.safetensors"
    save_model(_net(), src, dtype=torch.float16)
    out = tmp_path / "wide.safetensors"
    run = subprocess.run([sys.executable, str(SCRIPT), str(src), "16", "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    before, wide = load_model(src), load_model(out)
    assert wide.dtype == torch.float16 and wide.model.config.analysis_width == 16
    assert wide.stream_fingerprint == before.fingerprint != wide.fingerprint
    assert f"its streams carry {before.fingerprint.hex()[:16]}" in run.stdout and "(float16)" in run.stdout


@pytest.mark.parametrize("args, message", [
    (["4"], "g_a is 8 channels wide; widening to 4 would narrow it"),
    (["5000"], "N_a must be a channel count"),
    (["16", "--init-scale", "nan"], "init_scale must be a finite number of at least 0, got nan"),
])
def test_widen_encoder_says_what_is_wrong_in_one_line(tmp_path, model_file, args, message):
    run = subprocess.run([sys.executable, str(SCRIPT), str(model_file), *args, "-o", str(tmp_path / "w.safetensors")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("widen_encoder: error: ") and message in run.stderr
    assert not (tmp_path / "w.safetensors").exists()


def test_widen_analysis_refuses_a_width_or_scale_with_a_config_error():
    from vlmcodec.models.widen import widen_analysis

    net = _net()
    for width, message in ((4, "would narrow it"), (4.5, "channel count, got 4.5"), ("16", "channel count, got '16'"),
                           (True, "channel count, got True")):
        with pytest.raises(ConfigError, match=message):
            widen_analysis(net, width)
    with pytest.raises(ConfigError, match="init_scale"):
        widen_analysis(net, 16, init_scale=-1.0)
    assert widen_analysis(net, np.int64(16)).config.analysis_width == 16


# -- the CompressAI import --------------------------------------------------------------------------------------


def _compressai_state() -> dict:
    return {k: v for k, v in _net().state_dict().items() if k not in ("gain", "inv_gain")}


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.__setitem__(5, torch.zeros(1)), "key 5 is not a name"),
    (lambda s: s.__setitem__("gaussian_conditional.scale_table", 3), "scale_table holds a value of type int"),
    (lambda s: s.__setitem__("g_a.0.weight", [1, 2, 3]), "g_a.0.weight holds a value of type list"),
    (lambda s: s.__setitem__("g_a.0.weight", s["g_a.0.weight"].to(torch.int64)), "g_a.0.weight is int64"),
    (lambda s: s.__setitem__("g_a.6.weight", torch.zeros(())), "has no output channels"),
])
def test_convert_compressai_refuses_what_is_no_state_dict_of_tensors(tmp_path, edit, message):
    """Non-string keys and non-tensor values raised AttributeError; integer weights loaded."""
    from vlmcodec.models.convert import convert_compressai

    state = _compressai_state()
    edit(state)
    torch.save(state, tmp_path / "odd.pth")
    out = tmp_path / "out.safetensors"
    with pytest.raises(ConfigError, match=f"does not look like a CompressAI .*{message}"):
        convert_compressai(tmp_path / "odd.pth", out)
    assert not out.exists()


def test_convert_compressai_writes_no_model_file_that_load_model_refuses(tmp_path):
    """A descending scale table was converted into a file that load_model, info and every codec
    then refused."""
    from vlmcodec.models.convert import convert_compressai

    state = _compressai_state()
    state["gaussian_conditional.scale_table"] = state["gaussian_conditional.scale_table"].flip(0)
    torch.save(state, tmp_path / "desc.pth")
    out = tmp_path / "desc.safetensors"
    with pytest.raises(ConfigError, match="scale_table must be 2 or more ascending positive values"):
        convert_compressai(tmp_path / "desc.pth", out)
    assert not out.exists()
    torch.save(_compressai_state(), tmp_path / "ok.pth")  # (the same, ascending)
    fp = convert_compressai(tmp_path / "ok.pth", tmp_path / "ok.safetensors")
    assert load_model(tmp_path / "ok.safetensors").fingerprint == fp


# -- the exact h_s at encode time ----------------------------------------------------------------------------


def test_a_model_whose_z_overflows_the_exact_h_s_is_a_config_error_when_encoding(tmp_path, model_file):
    """Finite but huge gains (behind a valid fingerprint): the encoder's exact h_s raised a bare
    OverflowError (decoding such z values says "corrupt stream")."""
    from vlmcodec import Codec

    path = _rewrite(model_file, tmp_path / "gain.safetensors",
                    tensors=lambda t: t.__setitem__("gain", torch.full_like(t["gain"], 3e38)))
    codec = Codec(str(path), pre_edit=False)
    with pytest.raises(ConfigError, match="out of range for the exact h_s"):
        codec.encode(smooth_image(np.random.default_rng(0), 64, 64), quality=50)


def test_convert_keeps_an_fp16_models_dtype_and_decoder(tmp_path, capsys):
    """convert saved float32 whatever the source: an fp16 model re-saved changed its fingerprint,
    and --decodes-as an fp16 model (--from-model, --from-weights) was refused as another decoder."""
    from vlmcodec.models.widen import widen_analysis
    from vlmcodec.training.weights import save_weights

    a16 = tmp_path / "a16.safetensors"
    save_model(_net(), a16, dtype=torch.float16)
    A16 = load_model(a16)
    b16 = tmp_path / "b16.safetensors"  # a wider encoder sharing a16's decoder
    save_model(widen_analysis(A16.model, 16), b16, dtype=torch.float16, decodes_as=A16.identity)
    assert main(["convert", "--from-model", str(a16), "-o", str(tmp_path / "a16_re.safetensors")]) == 0
    assert load_model(tmp_path / "a16_re.safetensors").fingerprint == A16.fingerprint
    assert main(["convert", "--from-model", str(b16), "-o", str(tmp_path / "b16_re.safetensors")]) == 0
    assert load_model(tmp_path / "b16_re.safetensors").stream_fingerprint == A16.fingerprint
    assert f"(the decoder {b16} shares)" in capsys.readouterr().out  # it was "(None's decoder)"
    net = load_model(a16).model
    with torch.no_grad():
        net.g_a[0].weight.mul_(1.01)  # an encoder-only change
    save_weights(net, tmp_path / "enc.safetensors")
    assert main(["convert", "--from-weights", str(tmp_path / "enc.safetensors"), "--decodes-as", str(a16),
                 "-o", str(tmp_path / "enc16.safetensors")]) == 0
    assert load_model(tmp_path / "enc16.safetensors").stream_fingerprint == A16.fingerprint


def test_convert_refuses_n_and_m_it_would_ignore_and_an_output_that_is_its_input(tmp_path, model_file, capsys):
    from vlmcodec.training.weights import save_weights

    assert main(["convert", "--from-model", str(model_file), "--N", "5", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "--N and --M apply to --from-compressai" in capsys.readouterr().err
    weights = tmp_path / "w.safetensors"
    save_weights(load_model(model_file).model, weights)
    before = weights.read_bytes()
    assert main(["convert", "--from-weights", str(weights), "-o", str(weights)]) == 2
    assert "would replace its own input" in capsys.readouterr().err and weights.read_bytes() == before


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float8_e4m3fn])
def test_a_weights_file_with_tensors_that_are_no_floats_is_refused(tmp_path, model_file, dtype):
    """(model files were checked so; a weights file's integers or bools became float weights silently)"""
    from vlmcodec.training.weights import read_weights, save_weights

    good = tmp_path / "w.safetensors"
    save_weights(load_model(model_file).model, good)
    tensors, meta = read_safetensors(good, "weights file")
    tensors["g_a.0.bias"] = tensors["g_a.0.bias"].to(dtype)
    meta.pop("weights_digest", None)  # (files written before the digest have none)
    save_file(tensors, tmp_path / "odd.safetensors", metadata=meta)
    with pytest.raises(ConfigError, match="g_a.0.bias is stored as"):
        read_weights(tmp_path / "odd.safetensors")


def test_a_scale_table_with_two_equal_entries_is_refused(tmp_path):
    """A scale table with two equal entries (not strictly ascending): refused by load and by info."""
    net = _net()
    with torch.no_grad():
        st = net.gaussian_conditional.scale_table
        st[1] = st[0]
    path = tmp_path / "flat.safetensors"
    save_model(net, path)
    for read in (load_model, describe_model):
        with pytest.raises(ConfigError, match="scale_table must be 2 or more ascending positive"):
            read(path)


def test_a_short_stream_fingerprint_claim_is_refused(tmp_path):
    """A shared-decoder claim whose stream_fingerprint is 16 hex digits, not a whole fingerprint: refused."""
    a = tmp_path / "a.safetensors"
    save_model(_net(), a)
    ident = load_model(a).identity
    b = tmp_path / "b.safetensors"
    save_model(_net(), b, decodes_as=ident, require_shared=True)
    short = _rewrite(b, tmp_path / "short.safetensors",
                     meta=lambda m: m.__setitem__("stream_fingerprint", m["stream_fingerprint"][:16]))
    with pytest.raises(ConfigError, match="is not a fingerprint"):
        load_model(short)


def test_a_bool_cdf_table_is_refused_by_describe_model(tmp_path, model_file):
    """`vlmcodec info` (describe_model) refuses a CDF table stored as bool, as loading does."""
    path = _rewrite(model_file, tmp_path / "b.safetensors",
                    tensors=lambda t: t.__setitem__("tables.z.cdf", t["tables.z.cdf"] > 0))
    with pytest.raises(ConfigError, match=r"tables.z.cdf must be an integer array \(int32\), got bool"):
        describe_model(path)


def test_stored_dtype_of_a_mixed_file_is_float32():
    """A file mixing float dtypes is stored float32 (a model saved in a decodes_as model's dtype took an arbitrary
    one)."""
    t = {"a.weight": torch.zeros(2, dtype=torch.float16), "b.weight": torch.zeros(2, dtype=torch.bfloat16),
         "tables.z.cdf": torch.zeros(2, dtype=torch.int32)}
    assert stored_dtype(t) == torch.float32
    assert stored_dtype({"a.weight": torch.zeros(2, dtype=torch.float16)}) == torch.float16


def test_extra_metadata_cannot_forge_a_stream_identity(tmp_path):
    """extra_metadata (copied from a weights file's) cannot plant stream_fingerprint or decoder_digest; other keys are
    kept."""
    path = tmp_path / "m.safetensors"
    fp = save_model(_net(), path, extra_metadata={"stream_fingerprint": "ab" * 32, "decoder_digest": "cd" * 32,
                                                  "note": "kept"})
    loaded = load_model(path)
    assert loaded.stream_fingerprint == fp and loaded.metadata["note"] == "kept"
    assert "stream_fingerprint" not in loaded.metadata


def test_a_model_with_another_scale_bound_does_not_share_the_decoder(tmp_path):
    """The decoder digest covers gaussian_conditional's scale_bound (the decoder's clamp of sigma): another bound is
    another decoder."""
    a = tmp_path / "a.safetensors"
    save_model(_net(), a)
    ident = load_model(a).identity
    other = _net()
    with torch.no_grad():
        other.gaussian_conditional.scale_bound.fill_(0.2)
    with pytest.raises(ConfigError, match="decoder"):
        save_model(other, tmp_path / "b.safetensors", decodes_as=ident, require_shared=True)


def test_a_negative_lineage_step_count_is_none(tmp_path, model_file):
    """A lineage stage's negative train_steps is shown as unknown, not as a count."""
    path = _rewrite(model_file, tmp_path / "l.safetensors",
                    meta=lambda m: m.__setitem__("train_lineage", json.dumps([{"file": "x", "train_steps": -5},
                                                                              {"file": "y", "train_steps": 7}])))
    assert [st["train_steps"] for st in describe_model(path)["lineage"]] == [None, 7]


def test_convert_a_compressai_checkpoint_whose_scale_table_was_never_filled(tmp_path):
    """A CompressAI training checkpoint saved before update() (an empty scale table, the usual case) converts."""
    from vlmcodec.bench.compressai_compat import import_compressai
    from vlmcodec.models.convert import convert_compressai

    google = import_compressai("models.google")
    torch.manual_seed(0)
    ref = google.MeanScaleHyperprior(N=8, M=12).eval()
    state = ref.state_dict()
    assert state["gaussian_conditional.scale_table"].numel() == 0  # the premise: never updated
    torch.save(state, tmp_path / "ckpt.pth")
    convert_compressai(tmp_path / "ckpt.pth", tmp_path / "out.safetensors")
    assert load_model(tmp_path / "out.safetensors").model.gaussian_conditional.scale_table.numel() > 1


def test_an_edited_model_file_is_refused_as_weights(tmp_path, model_file):
    """A model file given as weights (init_from) is checked: one edited behind its fingerprint is refused."""
    from vlmcodec.training.weights import load_weights_into

    t, m = read_safetensors(model_file)
    t = dict(t)
    t["g_s.0.weight"] = t["g_s.0.weight"] + 0.5  # fingerprint kept: an edit it catches
    save_file({k: v.contiguous() for k, v in t.items()}, str(tmp_path / "e.safetensors"), metadata=dict(m))
    with pytest.raises(ConfigError, match="fingerprint mismatch"):
        load_weights_into(_net(), tmp_path / "e.safetensors")


def test_a_decoder_off_by_one_percent_is_no_shared_decoder(tmp_path, model_file):
    """A decoder moved by 1 % (trained) is not the decodes_as model's up to fp16 rounding; an unchanged one is."""
    from vlmcodec.training.weights import save_weights, weights_to_model_file

    old = load_model(model_file)
    net = _net()
    with torch.no_grad():
        net.g_s[0].weight.mul_(1.01)
    save_weights(net, tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match="up to fp16 rounding"):
        weights_to_model_file(tmp_path / "w.safetensors", tmp_path / "o.safetensors", decodes_as=old)
    save_weights(_net(), tmp_path / "same.safetensors")  # the premise: unchanged weights do share it
    weights_to_model_file(tmp_path / "same.safetensors", tmp_path / "o2.safetensors", decodes_as=old)
    assert load_model(tmp_path / "o2.safetensors").stream_fingerprint == old.fingerprint


def test_decodes_as_a_model_of_another_width_is_a_config_error(tmp_path):
    """decodes_as a model of another width: a ConfigError naming it, not torch's RuntimeError."""
    from vlmcodec.training.weights import save_weights, weights_to_model_file

    torch.manual_seed(0)
    wide = MeanScaleHyperprior(ModelConfig(N=8, M=16, num_levels=2, lmbdas=(0.01, 0.05))).eval()
    save_model(wide, tmp_path / "wide.safetensors")
    save_weights(_net(), tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match="does not fit the decoder of"):
        weights_to_model_file(tmp_path / "w.safetensors", tmp_path / "o.safetensors",
                              decodes_as=load_model(tmp_path / "wide.safetensors"))

