"""scripts/post_filter_probe.py: the filter starts as the identity, so a codec decoding through
an untrained filter gives the plain codec's pixels; another filter changes them, and each item of
a batch reaches it with its own quality level."""

import importlib.util
from pathlib import Path

import numpy as np
import torch

from conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]


def _probe():
    spec = importlib.util.spec_from_file_location("post_filter_probe", ROOT / "scripts/post_filter_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _save(mod, pf, path):
    torch.save({"state": pf.state_dict(), "channels": 4, "blocks": 1}, path)
    return path


def test_untrained_filter_is_the_identity_and_a_level_reaches_each_item(tmp_path, rng):
    mod = _probe()
    torch.manual_seed(0)
    pf = mod.PostFilter(channels=4, blocks=1)
    x = torch.rand(2, 3, 32, 48)
    assert torch.equal(pf(x, torch.tensor([0.0, 1.0])), x)
    plain = mod.filtered_codec(None, None)
    img = smooth_image(rng, 64, 96)
    streams = [plain.encode(img, 0), plain.encode(img, 100)]
    identity = mod.filtered_codec(str(_save(mod, pf, tmp_path / "id.pt")), None)
    for s in streams:
        assert np.array_equal(identity.decode(s), plain.decode(s))

    seen = []  # the levels each filter call receives
    forward = mod.PostFilter.forward
    mod.PostFilter.forward = lambda self, x, level01: seen.append(level01.tolist()) or forward(self, x, level01)
    try:
        with torch.no_grad():
            pf.tail[-1].bias.fill_(0.2)  # no longer the identity
        shifted = mod.filtered_codec(str(_save(mod, pf, tmp_path / "sh.pt")), None)
        both = shifted.decode_batch(streams)
        assert sum(seen, []) == [0.0, 1.0]  # q0 is level 0, q100 the top level, in batch order
        one_by_one = [shifted.decode(s) for s in streams]
    finally:
        mod.PostFilter.forward = forward
    assert all(np.array_equal(a, b) for a, b in zip(both, one_by_one))
    assert not np.array_equal(one_by_one[0], plain.decode(streams[0]))
