"""``train_only``: training some parts of the model with the others frozen (an encoder-only
fine-tune keeps the decoder, its entropy tables included, bit for bit)."""

from dataclasses import replace

import pytest
from safetensors.numpy import load_file

from conftest import write_train_folder
from vlmcodec.errors import ConfigError
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.training.trainer import DECODER_PARTS, ENCODER_PARTS, TrainConfig, freeze_untrained, train


def _cfg(tmp_path, **kw) -> TrainConfig:
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    return TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "full"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                       batch=2, steps=3, warmup=1, threads=1, lr=1e-3, lr_final=1e-4, pre_editor=True,
                       ckpt_every=2, **kw)


def _part(key: str) -> str:
    return key.split(".", 1)[0]


@pytest.mark.parametrize("ema_decay", [0.0, 0.999])
def test_an_encoder_only_fine_tune_leaves_the_decoder_bit_for_bit(tmp_path, ema_decay):
    cfg = _cfg(tmp_path)
    train(cfg, progress=False)
    start = tmp_path / "full" / "model.safetensors"
    enc = replace(cfg, out_dir=str(tmp_path / "enc"), init_from=str(start), train_only=ENCODER_PARTS, steps=4,
                  ema_decay=ema_decay)  # with a weight average too: model.safetensors is the average
    train(enc, progress=False)
    before, after = load_file(start), load_file(tmp_path / "enc" / "model.safetensors")
    assert before.keys() == after.keys()
    decoder = [k for k in before if _part(k) in (*DECODER_PARTS, "gaussian_conditional", "tables")]
    encoder = [k for k in before if _part(k) in ENCODER_PARTS]
    assert decoder and encoder and len(decoder) + len(encoder) == len(before)
    for k in decoder:  # weights, the CDF tables and the medians
        assert (before[k] == after[k]).all(), k
    moved = [k for k in encoder if not (before[k] == after[k]).all()]
    assert {_part(k) for k in moved} == {"g_a", "h_a", "gain", "pre_editor"}, moved


def test_train_only_resumes_and_freezes_what_it_does_not_name(tmp_path):
    cfg = _cfg(tmp_path, train_only=("g_s",))
    train(replace(cfg, steps=2), progress=False)  # stops at a checkpoint: the next run resumes it
    train(cfg, progress=False)
    model = MeanScaleHyperprior(cfg.model_config())
    freeze_untrained(model, ("g_s", "inv_gain"))
    trainable = {n.split(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"g_s", "inv_gain"}


@pytest.mark.parametrize("parts, message", [(("g_x",), "unknown part"), (("pre_editor",), "has none")])
def test_a_bad_train_only_is_a_config_error(parts, message):
    model = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05)))
    with pytest.raises(ConfigError, match=message):
        freeze_untrained(model, parts)


def test_an_unknown_key_is_named_where_it_was_given(tmp_path):
    """(a --set key nothing knows was reported as a key of the config file)"""
    from vlmcodec.errors import ConfigError
    from vlmcodec.training.trainer import TrainConfig

    config = tmp_path / "c.toml"
    config.write_text("steps = 2\n")
    with pytest.raises(ConfigError, match=r"unknown keys given as overrides \(--set\): \['nokey'\]"):
        TrainConfig.from_toml(config, nokey=1)
    config.write_text("steps = 2\nnope = 1\n")
    with pytest.raises(ConfigError, match=r"unknown keys in .*c.toml: \['nope'\]"):
        TrainConfig.from_toml(config, steps=3)
