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


def test_scipy_face_decodes_and_checks_its_size():
    import bz2
    rgb = np.arange(768 * 1024 * 3, dtype=np.uint32).astype(np.uint8)
    im = etd._scipy_face(bz2.compress(rgb.tobytes()))
    assert im.size == (1024, 768) and im.mode == "RGB"
    assert np.array_equal(np.asarray(im).ravel(), rgb)
    with pytest.raises(RuntimeError, match="expected 768"):
        etd._scipy_face(bz2.compress(b"short"))


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
    third_deb, third_wheel = _png(src / "rocks.png", 90, 60, seed=4), _png(src / "bus.png", 60, 90, seed=5)

    def debian(work, members):
        if members is etd.DEB_MEMBERS:
            return [("pkg (pkg.deb)", big, "wallpapers/wall.jpg")]
        if members is etd.DEB_MEMBERS_LATER:
            return [("late (late.deb)", later, "late.png")]
        assert members is etd.DEB_MEMBERS_3
        return [("tux (tux.deb)", third_deb, "rocks.jpg")]

    def wheels(work, members):
        if members is etd.WHEEL_MEMBERS:
            return [("w==1 (w.whl)", wheel, "w/cat.png")]
        if members is etd.WHEEL_MEMBERS_3:
            return [("u==2 (u.whl)", third_wheel, "u/bus.jpg")]
        assert members == {}
        return []

    monkeypatch.setattr(etd, "_debian_photos", debian)
    monkeypatch.setattr(etd, "_wheel_photos", wheels)
    out = tmp_path / "out"
    assert etd.main(["--out", str(out), "--shared", str(shared)]) == 0
    assert (out / "001.png").is_symlink() and not (out / "ATTRIBUTION.md").exists()
    with Image.open(out / "x000.png") as im:
        assert im.size[0] * im.size[1] <= etd.MAX_PIXELS * 1.01
    sources = (out / "SOURCES.md").read_text()
    # each batch comes after the earlier ones, so earlier files keep their names
    assert "| x000.png | pkg (pkg.deb) | wallpapers/wall.jpg |" in sources
    assert "| x001.png | w==1 (w.whl) | w/cat.png |" in sources
    assert "| x002.png | late (late.deb) | late.png |" in sources
    assert "| x003.png | tux (tux.deb) | rocks.jpg |" in sources
    assert "| x004.png | u==2 (u.whl) | u/bus.jpg |" in sources
    with Image.open(out / "x002.png") as im:
        assert im.size == (300, 200)
    for batches, last in ((1, "x001.png"), (2, "x002.png")):
        only = tmp_path / f"only{batches}"
        assert etd.main(["--out", str(only), "--shared", str(shared), "--batches", str(batches)]) == 0
        made = sorted(p.name for p in only.glob("x*.png"))
        assert made[-1] == last
        assert (only / last).read_bytes() == (out / last).read_bytes()
    assert "late.png" not in (tmp_path / "only1" / "SOURCES.md").read_text()
    with pytest.raises(SystemExit):
        etd.main(["--out", str(tmp_path / "bad"), "--shared", str(shared), "--batches", "4"])
