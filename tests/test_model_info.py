"""``vlmcodec info MODEL.safetensors``: what a model file is (``checkpoint.describe_model``)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from vlmcodec.cli import main
from vlmcodec.errors import ConfigError
from vlmcodec.export.c_decoder import decoder_model_bytes
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.models.checkpoint import (describe_model, fingerprint_of, load_model, read_safetensors,
                                        save_model)
from vlmcodec.models.widen import widen_analysis


def test_info_of_a_model_file_and_of_one_sharing_its_decoder(tmp_path, capsys):
    net = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05)))
    a = tmp_path / "a.safetensors"
    save_model(net, a, extra_metadata={"train_steps": 7})
    b = tmp_path / "b.safetensors"
    save_model(widen_analysis(net, 16), b, decodes_as=load_model(a).identity)
    assert main(["info", str(a)]) == 0
    text = capsys.readouterr().out
    fp = load_model(a).fingerprint.hex()
    assert fp in text and "N 8, M 12" in text and "7 steps" in text and "shares" not in text
    assert "weights:" not in text and describe_model(a)["train_weights"] is None
    avg = tmp_path / "avg.safetensors"  # a training run's weight average (ema_decay) says so
    save_model(net, avg, extra_metadata={"train_steps": 7, "train_weights": "average (ema_decay 0.999)"})
    assert main(["info", str(avg)]) == 0
    assert "7 steps (weights: the average (ema_decay 0.999))" in capsys.readouterr().out
    assert main(["info", "--json", str(b)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["stream_fingerprint"] == fp != d["fingerprint"] and d["config"]["N_a"] == 16
    assert d["parameters"]["decoder"] == describe_model(a)["parameters"]["decoder"]
    assert d["parameters"]["encoder"] > describe_model(a)["parameters"]["encoder"]


def test_info_of_a_file_that_is_no_model_fails_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert main(["info", str(bad)]) != 0
    err = capsys.readouterr().err
    assert "bad.safetensors" in err and "cannot read" in err


def test_weights_not_finite_are_refused_by_save_load_info_and_export(tmp_path, capsys):
    """A diverged training's NaN (or a weight beyond float16's range saved as float16) is refused
    before a file is written; a file holding one behind a valid fingerprint (written before
    save_model checked) is refused by load_model and ``vlmcodec info``; the C decoder's exporter
    refuses a loaded model holding one."""
    net = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05)))
    good = tmp_path / "good.safetensors"
    save_model(net, good)
    with torch.no_grad():
        net.g_s[0].weight[0, 0, 0, 0] = 1e5  # finite in float32, infinite in float16
    save_model(net, tmp_path / "f32.safetensors")
    with pytest.raises(ConfigError, match=r"not saved: weights not finite \(as torch.float16\) in 1 tensors \(g_s.0.weight\)"):
        save_model(net, tmp_path / "f16.safetensors", dtype=torch.float16)
    assert not (tmp_path / "f16.safetensors").exists()
    with torch.no_grad():
        net.h_a[0].bias[1] = float("nan")
    with pytest.raises(ConfigError, match=r"weights not finite .* \(h_a.0.bias\)"):
        save_model(net, tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()

    tensors, meta = read_safetensors(good)
    config = ModelConfig.from_dict(json.loads(meta["config"]))
    tensors["g_a.0.bias"] = tensors["g_a.0.bias"].clone()
    tensors["g_a.0.bias"][0] = float("inf")
    meta = dict(meta, fingerprint=fingerprint_of(config, tensors).hex())  # a valid fingerprint
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=meta)
    with pytest.raises(ConfigError, match=r"old.safetensors: weights not finite in 1 tensors \(g_a.0.bias\)"):
        load_model(old)
    assert main(["info", str(old)]) != 0
    assert "weights not finite" in capsys.readouterr().err

    loaded = load_model(good)
    decoder_model_bytes(loaded)  # (the intact model exports)
    with torch.no_grad():
        loaded.model.g_s[-1].bias[0] = float("nan")
    with pytest.raises(ConfigError, match="weights are not finite in 1 tensors"):
        decoder_model_bytes(loaded)


@pytest.mark.parametrize("change, message", [
    ({"N": 10**7}, r"N must be a channel count in \[1, 4096\], got 10000000"),
    ({"M": "12"}, "M must be a channel count"),
    ({"N_a": 0}, "N_a must be a channel count"),
    ({"num_levels": 0}, r"num_levels must be in \[1, 1024\]"),
    ({"lmbdas": [0.01, -0.05]}, "lmbdas must be finite numbers, none negative"),
    ({"lmbdas": ["nan"]}, "lmbdas must be finite numbers, none negative"),
    ({"arch": "elic"}, "unknown architecture 'elic'"),
    ({"pre_editor": "yes"}, "pre_editor must be true or false"),
])
def test_a_model_file_with_an_absurd_architecture_is_refused_before_any_tensor(tmp_path, capsys, change, message):
    """The architecture in a model file's metadata (damaged, or edited with its fingerprint
    recomputed) is checked before a network is made: ten million channels would otherwise ask for
    terabytes; a string where a count belongs would fail deep inside torch."""
    net = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05)))
    save_model(net, tmp_path / "good.safetensors")
    tensors, meta = read_safetensors(tmp_path / "good.safetensors")
    meta = dict(meta, config=json.dumps(json.loads(meta["config"]) | change))
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(ConfigError, match=f"unreadable architecture in its metadata \\({message}"):
        load_model(bad)
    assert main(["info", str(bad)]) == 2
    assert "unreadable architecture" in capsys.readouterr().err


def test_not_finite_names_exactly_the_tensors_holding_a_nan_or_an_infinity():
    """Its sum pre-check must neither flag a finite tensor whose sum overflows (float32 and
    float16) nor miss +∞ and −∞ together (their sum is NaN) or one NaN."""
    from vlmcodec.models.checkpoint import not_finite

    tensors = {"big": torch.full((4,), 3e38), "half": torch.full((8,), 6e4, dtype=torch.float16),
               "ints": torch.arange(5), "ok": torch.ones(3, 3), "nan": torch.tensor([1.0, float("nan")]),
               "both": torch.tensor([float("inf"), -float("inf")]), "inf16": torch.tensor([1.0, float("inf")]).half()}
    assert not_finite(tensors) == ["nan", "both", "inf16"]


def test_a_damaged_model_file_is_refused_or_loads_the_same_model(tmp_path):
    """300 damaged copies of a model file (bytes overwritten or flipped anywhere, in the JSON
    header, digits of its shapes and offsets changed, truncations): load_model raises a
    VlmcodecError, or the file still holds the same model (a byte of header padding), never another
    exception."""
    import random

    from vlmcodec.errors import VlmcodecError

    torch.manual_seed(0)
    good = tmp_path / "good.safetensors"
    fp = save_model(MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05), pre_editor=True)),
                    good)
    blob = good.read_bytes()
    header = int.from_bytes(blob[:8], "little")
    rng = random.Random(1)
    outcomes = {"refused": 0, "same": 0}
    for _ in range(300):
        b = bytearray(blob)
        kind = rng.choice(["bytes", "header", "truncate", "flip", "digit"])
        if kind == "bytes":
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == "header":
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(8, 8 + header)] = rng.randrange(256)
        elif kind == "truncate":
            b = b[:rng.randrange(len(b))]
        elif kind == "flip":
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        else:
            digits = [8 + k for k, c in enumerate(blob[8:8 + header]) if chr(c).isdigit()]
            b[rng.choice(digits)] = ord(str(rng.randrange(10)))
        damaged = tmp_path / "damaged.safetensors"
        damaged.write_bytes(bytes(b))
        try:
            loaded = load_model(damaged)
        except VlmcodecError:
            outcomes["refused"] += 1
            continue
        assert loaded.fingerprint == fp, kind
        outcomes["same"] += 1
    assert outcomes["refused"] > 250, outcomes


def test_model_and_weights_files_are_written_whole_or_not_at_all(tmp_path, tiny_model_path, monkeypatch):
    """save_model (convert -o, training's model.safetensors, the default model itself),
    save_weights and export_c_decoder: a write interrupted at its last step (the rename) leaves
    the file as it was and no temporary file (they were written in place: a Ctrl-C mid-write left
    a truncated model, refused at load or, for the default, breaking every Codec made from it)."""
    import os

    from vlmcodec.export.c_decoder import export_c_decoder
    from vlmcodec.models.checkpoint import load_model, save_model
    from vlmcodec.training.weights import save_weights

    loaded = load_model(tiny_model_path)
    targets = {"model": tmp_path / "m.safetensors", "weights": tmp_path / "w.safetensors",
               "c": tmp_path / "c" / "decoder_model.vlmd"}
    writes = {"model": lambda: save_model(loaded.model, targets["model"]),
              "weights": lambda: save_weights(loaded.model, targets["weights"]),
              "c": lambda: export_c_decoder(loaded, tmp_path / "c")}
    for name, write in writes.items():
        targets[name].parent.mkdir(exist_ok=True)
        targets[name].write_bytes(b"as it was")

        def interrupted(src, dst):
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            write()
        monkeypatch.undo()
        assert targets[name].read_bytes() == b"as it was", name
        assert not list(targets[name].parent.glob(".*.tmp")), name
        write()
        assert targets[name].read_bytes() != b"as it was", name
    assert load_model(targets["model"]).fingerprint == loaded.fingerprint


def test_the_networks_weights_are_counted_from_the_architecture_alone():
    """ModelConfig.network_weights (which bounds what a model file may make before any tensor is
    allocated) is the count MeanScaleHyperprior makes."""
    for config in (ModelConfig(), ModelConfig(N=16, M=24, num_levels=3, lmbdas=(1, 2, 3)),
                   ModelConfig(N=8, M=12, N_a=20, pre_editor=True), ModelConfig(N=7, M=13)):
        net = MeanScaleHyperprior(config)
        held = sum(p.numel() for n, p in net.named_parameters() if n.split(".")[0] in ("g_a", "g_s", "h_a", "h_s"))
        assert held == config.network_weights(), config


def test_an_edited_model_file_is_refused_before_anything_is_built(tmp_path):
    """A file without its fingerprint (an edited or hand-made one) declaring N = M = 4096 made a
    network of 5·10^9 weights (20 GB) before any tensor was looked at; one with a tensor of
    another shape or float CDF tables gave torch's or the table's traceback."""
    net = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05)))
    good = tmp_path / "good.safetensors"
    save_model(net, good)
    tensors, meta = read_safetensors(good)
    meta.pop("fingerprint")
    huge = tmp_path / "huge.safetensors"
    save_file({"x": torch.zeros(1)}, str(huge), metadata={**meta, "config": json.dumps(
        dict(json.loads(meta["config"]), N=4096, M=4096))})
    dropped = tmp_path / "dropped.safetensors"  # a network tensor missing: from the file alone
    save_file({k: v for k, v in tensors.items() if k != "g_s.0.weight"}, str(dropped), metadata=meta)
    flat = tmp_path / "flat.safetensors"  # as many weights, another shape: when the model is made
    save_file({**tensors, "g_s.0.weight": tensors["g_s.0.weight"].flatten().contiguous()}, str(flat), metadata=meta)
    float_cdf = tmp_path / "float_cdf.safetensors"
    save_file({**tensors, "tables.z.cdf": tensors["tables.z.cdf"].float()}, str(float_cdf), metadata=meta)
    for path, message in ((huge, "would hold 5,109,360,643 weights"), (dropped, "its g_a, g_s, h_a and h_s hold")):
        for read in (describe_model, load_model):
            with pytest.raises(ConfigError, match=message):
                read(path)
    with pytest.raises(ConfigError, match="weights do not match the architecture .*size mismatch for g_s.0.weight"):
        load_model(flat)
    with pytest.raises(ConfigError, match="bad z CDF tables .*integer"):
        load_model(float_cdf)


@pytest.mark.parametrize("edit, message", [
    (lambda gc: gc.scale_table.copy_(gc.scale_table.flip(0)), "scale_table must be 2 or more ascending positive"),
    (lambda gc: gc.scale_table.__setitem__(0, 0.0), "scale_table must be 2 or more ascending positive"),
    (lambda gc: gc.scale_bound.fill_(-1.0), "scale_bound must be one positive value"),
])
def test_a_scale_table_encoder_and_decoder_would_search_apart_is_refused(tmp_path, capsys, edit, message):
    """A table that does not ascend (the fused kernel counts entries below σ, torch bisects:
    their indices differ) or a bound that is not positive, behind a valid fingerprint: refused
    by load_model and ``vlmcodec info`` (it loaded)."""
    net = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05)))
    with torch.no_grad():
        edit(net.gaussian_conditional)
    path = tmp_path / "edited.safetensors"
    save_model(net, path)
    with pytest.raises(ConfigError, match=message):
        load_model(path)
    assert main(["info", str(path)]) != 0 and message in capsys.readouterr().err
