"""The model matches CompressAI's MeanScaleHyperprior: same weights → same y, z, x̂."""

import pytest
import torch

from vlmcodec.errors import ConfigError
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.models.convert import compressai_state_to_vlmcodec


@pytest.fixture(scope="module")
def compressai_google():
    from vlmcodec.bench.compressai_compat import import_compressai

    try:
        return import_compressai("models.google")
    except ImportError as e:
        pytest.skip(f"CompressAI not installed: {e}")


@pytest.mark.parametrize("N,M", [(32, 48), (64, 96)])
def test_same_weights_same_outputs(compressai_google, N, M):
    torch.manual_seed(0)
    ref = compressai_google.MeanScaleHyperprior(N=N, M=M).eval()
    # perturb the GDN and entropy parameters away from their identity-like init
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.add_(0.05 * torch.rand_like(p))
    ours = MeanScaleHyperprior(ModelConfig(N=N, M=M, num_levels=1, lmbdas=(0.01,))).eval()
    missing, unexpected = ours.load_state_dict(compressai_state_to_vlmcodec(ref.state_dict()), strict=False)
    assert set(missing) <= {"gain", "inv_gain", "gaussian_conditional.scale_table"} and not unexpected
    with torch.no_grad():
        ours.gain.fill_(1.0)
        ours.inv_gain.fill_(1.0)
        x = torch.rand(2, 3, 128, 192)
        r = ref(x)
        o = ours(x)
        y_ref = ref.g_a(x)
        z_ref = ref.h_a(y_ref)
    torch.testing.assert_close(o["y"], y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(o["z"], z_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(o["x_hat"], r["x_hat"], atol=1e-5, rtol=0)
    for k in ("y", "z"):
        torch.testing.assert_close(o["likelihoods"][k], r["likelihoods"][k], atol=1e-5, rtol=1e-4)


def test_gains_interpolate_between_anchors():
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016)))
    g, ig = net.gains(torch.tensor([0.0, 1.0, 2.0, 0.5]))
    torch.testing.assert_close(g[:3], net.gain.abs())
    torch.testing.assert_close(ig[:3], net.inv_gain.abs())
    torch.testing.assert_close(g[3], torch.sqrt(net.gain[0].abs() * net.gain[1].abs()))
    assert net.level_of_quality(100) == 2 and net.level_of_quality(0) == 0
    with pytest.raises(ConfigError, match="quality must be a number in"):
        net.level_of_quality(101)


def test_convert_cli_round_trip(compressai_google, tmp_path):
    from vlmcodec import Codec
    from vlmcodec.cli import main

    torch.manual_seed(3)
    ref = compressai_google.MeanScaleHyperprior(N=32, M=48).eval()
    ref.update(force=True)  # a real checkpoint carries CompressAI's coding buffers; they are dropped
    ckpt = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict": ref.state_dict(), "epoch": 3}, ckpt)
    out = tmp_path / "model.safetensors"
    assert main(["convert", "--from-compressai", str(ckpt), "-o", str(out)]) == 0
    codec = Codec(out)
    assert (codec.N, codec.M) == (32, 48)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(codec.model.g_s(codec.model.g_a(x)), ref.g_s(ref.g_a(x)), atol=1e-5, rtol=0)
    assert main(["convert", "--from-compressai", str(tmp_path / "missing.pth"), "-o", str(out)]) == 2


def test_convert_of_a_file_that_is_no_checkpoint_says_so_in_one_line(tmp_path, capsys):
    """(torch's dozen-line message advised weights_only=False: running whatever a crafted file holds)"""
    from vlmcodec.cli import main

    not_a_checkpoint = tmp_path / "photo.png"
    not_a_checkpoint.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert main(["convert", "--from-compressai", str(not_a_checkpoint), "-o", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights_only" not in err.replace("(weights only)", ""), err
    assert "not a checkpoint of tensors that torch.load reads safely" in err


def test_convert_of_a_checkpoint_that_does_not_fit_says_why(tmp_path, capsys):
    """A checkpoint of other sizes than --N/--M gave torch's size-mismatch traceback, one without
    g_a.6 a KeyError; --M 0 was taken as "read it from the shapes"."""
    from vlmcodec.cli import main

    state = {k: v for k, v in MeanScaleHyperprior(ModelConfig(N=16, M=24)).state_dict().items()
             if k not in ("gain", "inv_gain")}
    torch.save(state, tmp_path / "cai.pt")
    torch.save({k: v for k, v in state.items() if not k.startswith("g_a.6")}, tmp_path / "cut.pt")
    out = ["-o", str(tmp_path / "m.safetensors")]
    for args, message in ((["cai.pt", "--N", "32"], "not a MeanScaleHyperprior\\(N=32, M=24\\) checkpoint: size mismatch"),
                          (["cut.pt"], "does not look like a CompressAI .* \\(no 'g_a.6.weight'\\)"),
                          (["cai.pt", "--M", "0"], "M must be a channel count of at least 1, got 0")):
        assert main(["convert", "--from-compressai", str(tmp_path / args[0]), *args[1:], *out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and __import__("re").search(message, err), err
    assert main(["convert", "--from-compressai", str(tmp_path / "cai.pt"), *out]) == 0


def test_convert_of_a_checkpoint_pickled_at_protocol_4_says_so_without_torch_warnings(tmp_path, capsys):
    """torch.load's safe reader cannot read pickle protocol 4: the error said "not a checkpoint
    of tensors" after two lines of torch's UserWarning naming its own source files."""
    import warnings

    from vlmcodec.cli import main

    torch.save({"g_a.0.weight": torch.zeros(2)}, tmp_path / "p4.pth", pickle_protocol=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning let through fails the test
        assert main(["convert", "--from-compressai", str(tmp_path / "p4.pth"), "-o", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pickle protocol" in err and "torch.save's default protocol" in err, err
