"""scripts/prepare_gpu_data.py: the images packed for the device and the carry budget it enforces."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "prepare_gpu_data.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def _folder(path: Path) -> Path:
    path.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path / "big.png")
    Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(path / "small.jpg")
    (path / "SOURCES.md").write_text("not an image")
    return path


def test_packs_images_downscaled_within_the_checkout_budget(tmp_path):
    r = _run(str(_folder(tmp_path / "src")), str(tmp_path / "dst"), "--max-pixels", "30000", "--quality", "80")
    assert r.returncode == 0, r.stderr
    # the default budget: 64 MiB minus what the checkout sends (measured with git) minus 1 MiB
    line = next(l for l in r.stdout.splitlines() if l.startswith("the checkout sends"))
    tree, budget = (float(w) for w in line.replace(":", " ").split() if w.replace(".", "").isdigit())
    assert 0 < tree < 63 and abs(tree + budget - 63.0) < 0.11
    out = sorted(p.name for p in (tmp_path / "dst").iterdir())
    assert out == ["big.webp", "small.webp"]
    big, small = Image.open(tmp_path / "dst" / "big.webp"), Image.open(tmp_path / "dst" / "small.webp")
    assert big.width * big.height <= 30000 and abs(big.width / big.height - 4 / 3) < 0.02
    assert small.size == (100, 80)


def test_over_budget_exits_1(tmp_path):
    r = _run(str(_folder(tmp_path / "src")), str(tmp_path / "dst"), "--budget-mib", "0.001")
    assert r.returncode == 1 and "over the 0.001 MiB budget" in r.stderr


def test_missing_source_is_a_clear_error(tmp_path):
    r = _run(str(tmp_path / "nope"), str(tmp_path / "dst"))
    assert r.returncode == 1 and r.stderr.startswith("prepare_gpu_data:")


def test_sources_sharing_a_stem_are_refused_before_any_is_written(tmp_path):
    """(kodim15.png and kodim15.jpg both became kodim15.webp: "3 images" reported, 2 written)"""
    src = _folder(tmp_path / "src")
    Image.open(src / "small.jpg").save(src / "small.png")
    r = _run(str(src), str(tmp_path / "dst"), "--budget-mib", "10")
    assert r.returncode == 1, r.stdout
    assert "small.jpg and small.png would all be small.webp: rename all but one" in r.stderr
    assert not (tmp_path / "dst").exists()


def test_the_budget_counts_the_whole_carried_folder(tmp_path):
    """What travels is the carried folder (dst's top folder in the checkout) as it is after the run,
    files of earlier runs included, not only what this run wrote."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("gpu_data/\n")
    stale = repo / "gpu_data" / "kodak" / "old.webp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(bytes(600_000))
    src = _folder(tmp_path / "src")
    args = [sys.executable, str(SCRIPT), str(src), "gpu_data/train", "--max-pixels", "30000", "--budget-mib", "0.5"]
    r = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout  # the new images alone are ~0.1 MiB
    assert f"({repo.resolve() / 'gpu_data'}) is over the 0.5 MiB budget" in r.stderr
    stale.unlink()
    r = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (repo / "gpu_data" / "train").iterdir()) == ["big.webp", "small.webp"]
