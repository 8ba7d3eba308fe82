"""A wider analysis transform (``ModelConfig.N_a``) and ``widen_analysis``, which widens a
model's g_a without changing what it computes."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

from conftest import smooth_image, write_train_folder
from vlmcodec import Codec
from vlmcodec.bitstream import container
from vlmcodec.codec_set import CodecSet
from vlmcodec.errors import ConfigError
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.models.checkpoint import fingerprint_of, load_model, read_safetensors, save_model
from vlmcodec.models.widen import widen_analysis
from vlmcodec.training.trainer import TrainConfig, train


def _model(**kw) -> MeanScaleHyperprior:
    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05), **kw)).eval()
    with torch.no_grad():  # GDN cross terms that matter, as a trained model has
        for m in net.g_a:
            if hasattr(m, "gamma"):
                m.gamma.copy_(m.gamma_reparam.init(0.1 * torch.eye(m.channels) + 0.02 * torch.rand(m.channels, m.channels)))
    return net


def test_n_a_is_g_a_s_width_and_absent_from_the_config_when_it_is_n():
    assert "N_a" not in ModelConfig(N=8, M=12).to_dict()
    assert ModelConfig(N=8, M=12, N_a=8).N_a is None  # the same network, the same fingerprint
    cfg = ModelConfig(N=8, M=12, N_a=16)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    net = MeanScaleHyperprior(cfg)
    assert net.g_a[0].out_channels == 16 and net.g_a[-1].in_channels == 16
    assert net.g_s[0].out_channels == 8 and net.h_a[0].out_channels == 8
    with pytest.raises(ValueError, match="N_a"):
        ModelConfig(N=8, M=12, N_a=0)


def test_widening_keeps_y_and_every_other_tensor_and_the_new_channels_are_live():
    net = _model()
    wide = widen_analysis(net, 20).eval()
    assert wide.config.analysis_width == 20
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(net.g_a(x), wide.g_a(x))
        hidden = wide.g_a[:2](x)
    assert hidden[:, 8:].abs().mean() > 0.1 * hidden[:, :8].abs().mean()
    a, b = net.state_dict(), wide.state_dict()
    for k in a:
        if not k.startswith("g_a."):
            assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="narrow"):
        widen_analysis(wide, 10)


def test_a_widened_model_writes_the_same_symbols(tmp_path):
    net = _model()
    save_model(net, tmp_path / "a.safetensors")
    save_model(widen_analysis(net, 16), tmp_path / "b.safetensors")
    img = smooth_image(np.random.default_rng(0), 96, 128)
    sa = Codec(str(tmp_path / "a.safetensors"), pre_edit=False).encode(img, quality=40)
    sb = Codec(str(tmp_path / "b.safetensors"), pre_edit=False).encode(img, quality=40)
    (ha, za, ya), (hb, zb, yb) = container.unpack(sa), container.unpack(sb)
    assert ha.fingerprint != hb.fingerprint  # it covers every tensor, the encoder's too
    assert (za, ya) == (zb, yb)


def test_an_encoder_only_run_of_a_widened_model_trains_the_new_channels(tmp_path):
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    cfg = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, N_a=16, lmbdas=(0.01, 0.05),
                      crop=64, batch=2, steps=3, warmup=1, threads=1, lr=1e-3, lr_final=1e-4, ckpt_every=10)
    start = tmp_path / "wide.safetensors"
    net = MeanScaleHyperprior(replace(cfg, N_a=0).model_config())
    save_model(widen_analysis(net, 16), start)
    train(replace(cfg, init_from=str(start), train_only=("g_a", "gain", "h_a")), progress=False)
    before, after = load_file(start), load_file(tmp_path / "run" / "model.safetensors")
    for k in before:
        if k.split(".", 1)[0] in ("g_s", "h_s", "inv_gain", "entropy_bottleneck", "tables"):
            assert (before[k] == after[k]).all(), k
    # the old outputs' weights from the new channels started at zero and moved
    assert (before["g_a.2.weight"][:8, 8:] == 0).all()
    assert (after["g_a.2.weight"][:8, 8:] != 0).any()


# -- sharing a decoder: streams of the widened (or encoder-only) model carry the original's fingerprint


def _shared_pair(tmp_path):
    net = _model()
    save_model(net, tmp_path / "a.safetensors")
    src = load_model(tmp_path / "a.safetensors")
    save_model(widen_analysis(net, 16), tmp_path / "b.safetensors", decodes_as=src.identity)
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


def test_a_model_sharing_a_decoder_writes_streams_the_original_decodes(tmp_path):
    a_path, b_path = _shared_pair(tmp_path)
    a, b = Codec(str(a_path), pre_edit=False), Codec(str(b_path), pre_edit=False)
    assert b.fingerprint != a.fingerprint and b.stream_fingerprint == a.fingerprint
    img = smooth_image(np.random.default_rng(1), 96, 128)
    sb, sa = b.encode(img, quality=60), a.encode(img, quality=60)
    assert container.fingerprint_of(sb) == a.fingerprint
    assert np.array_equal(a.decode(sb), b.decode(sb))  # the same decoder, bit for bit
    assert np.array_equal(b.decode(sa), a.decode(sa))  # and the new model reads the original's streams
    assert CodecSet([b]).codec_for(sa) is CodecSet([b]).default
    both = CodecSet([b, a])
    assert both.codec_for(sa).fingerprint == a.fingerprint  # the model itself first


def test_no_claim_for_a_different_decoder_and_an_edited_claim_is_refused(tmp_path):
    a_path, b_path = _shared_pair(tmp_path)
    other = _model()
    with torch.no_grad():
        other.g_s[0].weight.add_(0.01)
    ident = load_model(a_path).identity
    fp = save_model(other, tmp_path / "c.safetensors", decodes_as=ident)
    assert load_model(tmp_path / "c.safetensors").stream_fingerprint == fp  # not recorded
    with pytest.raises(ConfigError, match="decoder"):
        save_model(other, tmp_path / "d.safetensors", decodes_as=ident, require_shared=True)
    assert not (tmp_path / "d.safetensors").exists()
    # a file whose decoder was changed after it recorded the claim (fingerprint redone to match)
    tensors, meta = read_safetensors(b_path)
    tensors["g_s.0.weight"] = tensors["g_s.0.weight"] + 0.01
    config = ModelConfig.from_dict(json.loads(meta["config"]))
    meta["fingerprint"] = fingerprint_of(config, tensors).hex()
    save_file(tensors, str(tmp_path / "e.safetensors"), metadata=meta)
    with pytest.raises(ConfigError, match="claims to share"):
        load_model(tmp_path / "e.safetensors")


def test_an_encoder_only_run_keeps_the_init_models_streams_and_a_full_run_does_not(tmp_path):
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    start = tmp_path / "start.safetensors"
    save_model(_model(), start)
    cfg = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "enc"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                      batch=2, steps=2, warmup=1, threads=1, lr=1e-3, lr_final=1e-4, ckpt_every=10,
                      init_from=str(start))
    train(replace(cfg, train_only=("g_a", "gain", "h_a")), progress=False)
    train(replace(cfg, out_dir=str(tmp_path / "full")), progress=False)
    first = load_model(start).fingerprint
    enc, full = load_model(tmp_path / "enc" / "model.safetensors"), load_model(tmp_path / "full" / "model.safetensors")
    assert enc.fingerprint != first and enc.stream_fingerprint == first
    assert full.stream_fingerprint == full.fingerprint != first


def test_convert_from_model_records_a_shared_decoder_or_fails_clearly(tmp_path, capsys):
    from vlmcodec.cli import main

    a_path, b_path = _shared_pair(tmp_path)
    plain = tmp_path / "plain.safetensors"
    save_model(widen_analysis(_model(), 16), plain)  # the same networks, no claim recorded
    out = tmp_path / "out.safetensors"
    assert main(["convert", "--from-model", str(plain), "--decodes-as", str(a_path), "-o", str(out)]) == 0
    assert load_model(out).stream_fingerprint == load_model(a_path).fingerprint
    assert "its streams carry" in capsys.readouterr().out
    other = _model()
    with torch.no_grad():
        other.h_s[0].weight.mul_(1.5)
    save_model(other, tmp_path / "other.safetensors")
    assert main(["convert", "--from-model", str(tmp_path / "other.safetensors"), "--decodes-as", str(a_path),
                 "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "is not that of model" in capsys.readouterr().err


def test_a_server_of_the_shared_model_decodes_the_originals_streams(tmp_path):
    from conftest import serving
    from vlmcodec.runtime import RemoteCodec

    a_path, b_path = _shared_pair(tmp_path)
    a = Codec(str(a_path), pre_edit=False)
    img = smooth_image(np.random.default_rng(2), 64, 96)
    old = a.encode(img, quality=30)
    with serving(str(b_path)) as server, RemoteCodec(server.url) as remote:
        assert remote.health()["stream_model"] == a.fingerprint.hex() != remote.health()["model"]
        assert np.array_equal(remote.decode(old), a.decode(old))
        assert container.fingerprint_of(remote.encode(img, 30)) == a.fingerprint


def test_convert_from_fp16_weights_restores_the_shared_decoder_or_refuses_a_trained_one(tmp_path, capsys):
    """An encoder-only run that comes back as fp16 weights (the GPU machine's way) still shares
    its start's decoder: ``convert --from-weights --decodes-as`` restores it bit for bit."""
    from vlmcodec.cli import main
    from vlmcodec.training.weights import save_weights

    net = _model()
    old = tmp_path / "old.safetensors"
    save_model(net, old)
    with torch.no_grad():
        net.g_a[0].weight.mul_(1.01)  # the encoder moved, the decoder did not
    save_weights(net, tmp_path / "enc.safetensors")  # fp16
    out = tmp_path / "enc_model.safetensors"
    assert main(["convert", "--from-weights", str(tmp_path / "enc.safetensors"), "--decodes-as", str(old),
                 "-o", str(out)]) == 0
    new, before = load_model(out), load_model(old)
    assert new.stream_fingerprint == before.fingerprint != new.fingerprint
    a, b = new.model.state_dict(), before.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("g_s.", "h_s.", "inv_gain", "entropy_bottleneck.")))
    assert not torch.equal(a["g_a.0.weight"], b["g_a.0.weight"])
    capsys.readouterr()
    with torch.no_grad():
        net.g_s[0].weight.add_(0.05)  # a trained decoder
    save_weights(net, tmp_path / "both.safetensors")
    assert main(["convert", "--from-weights", str(tmp_path / "both.safetensors"), "--decodes-as", str(old),
                 "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "g_s.0.weight differs" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()
