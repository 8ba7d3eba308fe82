"""A wider analysis transform (``ModelConfig.N_a``) and ``widen_analysis``, which widens a
model's g_a without changing what it computes."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import smooth_image, write_train_folder
from vlmcodec import Codec
from vlmcodec.bitstream import container
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.models.checkpoint import save_model
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
