"""``vlmcodec info MODEL.safetensors``: what a model file is (``checkpoint.describe_model``)."""

import json

from vlmcodec.cli import main
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.models.checkpoint import describe_model, load_model, save_model
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
