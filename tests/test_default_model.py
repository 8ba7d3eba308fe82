"""The bundled default model: loads, round-trips the sample images, and its real file sizes
agree with the model's own rate estimate (catches broken CDF tables or escape storms)."""

from pathlib import Path

import pytest
import torch

from vlmcodec import Codec, default_model_path
from vlmcodec.image_io import load_image, pad_edge
from vlmcodec.training.loss import bpp_per_item

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"


@pytest.fixture(scope="module")
def codec():
    if not default_model_path().exists():
        pytest.fail("default model missing: engine/weights/default.safetensors must be committed")
    return Codec()


@pytest.mark.parametrize("quality", [0.0, 60.0, 100.0])
def test_real_size_matches_estimate(codec, quality):
    img = load_image(SAMPLES / "kodim23.png")
    h, w = img.shape[:2]
    data = codec.encode(img, quality)
    real_bpp = 8 * len(data) / (h * w)
    x = torch.from_numpy(pad_edge(img)[None].copy()).permute(0, 3, 1, 2).float() / 255
    model = codec.model.eval()
    with torch.no_grad():
        est = float(bpp_per_item(model(x, torch.tensor([model.level_of_quality(quality)]))["likelihoods"], h * w))
    assert abs(real_bpp - est) <= 0.05 * est + 0.01, (real_bpp, est)
    rec = codec.decode(data)
    assert rec.shape == img.shape


def test_quality_is_monotone(codec):
    img = load_image(SAMPLES / "kodim15.png")
    sizes = [len(codec.encode(img, q)) for q in (0, 25, 50, 75, 100)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
