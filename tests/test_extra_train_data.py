"""scripts/extra_train_data.py without the network: resizing, the plasma de-duplication, the folder it writes."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("extra_train_data", ROOT / "scripts" / "extra_train_data.py")
etd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(etd)


def _png(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_resized_caps_area_and_keeps_aspect():
    big = Image.new("RGB", (2560, 1600))
    out = etd._resized(big)
    assert out.size[0] * out.size[1] <= etd.MAX_PIXELS * 1.01
    assert abs(out.size[0] / out.size[1] - 1.6) < 0.01
    small = Image.new("L", (600, 400))
    kept = etd._resized(small)
    assert kept.size == (600, 400) and kept.mode == "RGB"


def test_largest_per_folder(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir(), b.mkdir()
    paths = [_png(a / "1.png", 64, 32), _png(a / "2.png", 128, 64), _png(b / "1.png", 32, 32)]
    assert etd._largest_per_folder(paths) == [a / "2.png", b / "1.png"]


def test_matching_names_a_pattern_that_matches_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    one, two = _png(tmp_path / "a" / "1.png", 8, 8), _png(tmp_path / "a" / "2.jpg", 8, 8)
    (tmp_path / "a" / "notes.txt").write_text("x")
    assert sorted(etd._matching(tmp_path, ["a/*", "a/1.png"], "pkg")) == [one, two]  # no repeats
    with pytest.raises(RuntimeError, match=r"pkg: no image matches 'a/3\.png'"):
        etd._matching(tmp_path, ["a/*", "a/3.png"], "pkg")


def test_main_links_shared_and_writes_sources(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    _png(shared / "001.png", 40, 30)
    (shared / "ATTRIBUTION.md").write_text("not an image")
    src = tmp_path / "src"
    src.mkdir()
    big = _png(src / "wall.jpg", 1600, 1000, seed=1)
    later = _png(src / "late.png", 300, 200, seed=2)
    wheel = _png(src / "cat.png", 200, 300, seed=3)

    def debian(work, members):
        if members is etd.DEB_MEMBERS:
            return [("pkg (pkg.deb)", big, "wallpapers/wall.jpg")]
        assert members is etd.DEB_MEMBERS_LATER
        return [("late (late.deb)", later, "late.png")]

    monkeypatch.setattr(etd, "_debian_photos", debian)
    monkeypatch.setattr(etd, "_wheel_photos", lambda work: [("w==1 (w.whl)", wheel, "w/cat.png")])
    out = tmp_path / "out"
    assert etd.main(["--out", str(out), "--shared", str(shared)]) == 0
    assert (out / "001.png").is_symlink() and not (out / "ATTRIBUTION.md").exists()
    with Image.open(out / "x000.png") as im:
        assert im.size[0] * im.size[1] <= etd.MAX_PIXELS * 1.01
    sources = (out / "SOURCES.md").read_text()
    # the photos added later come after the wheels', so earlier files keep their names
    assert "| x000.png | pkg (pkg.deb) | wallpapers/wall.jpg |" in sources
    assert "| x001.png | w==1 (w.whl) | w/cat.png |" in sources
    assert "| x002.png | late (late.deb) | late.png |" in sources
    with Image.open(out / "x002.png") as im:
        assert im.size == (300, 200)
    only = tmp_path / "only"
    assert etd.main(["--out", str(only), "--shared", str(shared), "--without-later"]) == 0
    assert (only / "x001.png").exists() and not (only / "x002.png").exists()
    assert "late.png" not in (only / "SOURCES.md").read_text()
