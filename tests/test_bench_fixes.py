"""The bench subcommands' audit: a run that measures nothing is an error that writes nothing; --out
and the images checked before anything is made; an empty --out a failed run made is removed;
ms-ssim's image size, repeated qualities and CompressAI's image sides refused before any coding."""

import json
import sys
import warnings

import pytest

from vlmcodec.bench import classic, rd
from vlmcodec.cli import main
from vlmcodec.errors import ConfigError

from conftest import write_train_folder

RD = ["--metrics", "psnr", "--no-semantic", "--no-plots", "--quiet"]


def _missing(name):
    class Missing(classic.ClassicCodec):
        def available(self):
            return False, f"{name} not here (test)"

    Missing.name = name
    return Missing


def _no_coding(monkeypatch):
    calls = []
    for cls in (classic.JPEG, classic.WebP):
        monkeypatch.setattr(cls, "encode", lambda self, img, q: calls.append(q))
    return calls


@pytest.fixture
def images(tmp_path):
    return write_train_folder(tmp_path / "imgs", n=2, h=64, w=64)


# --------------------------------------------------------------------------- 1. rd: no codec available

def test_rd_with_no_codec_available_is_an_error_that_keeps_the_earlier_results(images, tmp_path, monkeypatch,
                                                                               capsys):
    """(exit 0, and rd.json and report.md of no codec replaced the earlier good ones)"""
    for name in ("jxl", "hevc"):
        monkeypatch.setitem(classic.CLASSIC_CODECS, name, _missing(name))
    out = tmp_path / "out"
    assert main(["bench", "rd", str(images), "--out", str(out), "--codecs", "jpeg", "--qualities", "jpeg=50",
                 *RD]) == 0
    before = {f: (out / f).read_bytes() for f in ("rd.json", "report.md")}
    capsys.readouterr()
    for merge in ([], ["--merge"]):
        assert main(["bench", "rd", str(images), "--out", str(out), "--codecs", "jxl,hevc", *RD, *merge]) == 2
        err = capsys.readouterr().err
        assert ("error: none of the codecs asked for is available (jxl: jxl not here (test); "
                "hevc: hevc not here (test))") in err
        assert ("is left as it was" in err) == bool(merge)
        assert {f: (out / f).read_bytes() for f in ("rd.json", "report.md")} == before
    assert main(["bench", "rd", str(images), "--out", str(tmp_path / "new"), "--codecs", "jxl", *RD]) == 2
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- 2. speed: nothing measured

def test_speed_that_measures_nothing_writes_nothing(tmp_path, monkeypatch, capsys):
    """(the JSON, with "results": {}, replaced an earlier good one before the run said it failed)"""
    import vlmcodec
    from vlmcodec.errors import BackendUnavailableError

    def unavailable(*args, backend="torch", **kwargs):
        raise BackendUnavailableError(f"{backend} is off (test)")

    monkeypatch.setattr(vlmcodec, "Codec", unavailable)
    out = tmp_path / "speed.json"
    out.write_text('{"results": {"torch": {}}}')
    assert main(["bench", "speed", "--images", str(write_train_folder(tmp_path / "imgs", n=1, h=64, w=64)),
                 "--backends", "torch", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none of the backends asked for is available here (torch: torch is off (test))" in err
    assert out.read_text() == '{"results": {"torch": {}}}'


# --------------------------------------------------------------------------- 3. semantic: nothing measured

def test_semantic_jpeg_without_qualities_nor_timing_is_refused(tmp_path, monkeypatch, capsys):
    """(--jpeg with no value measured nothing, exit 0, and wrote a JSON without results)"""
    from vlmcodec.bench import semantic

    monkeypatch.setattr(semantic, "semantic_metrics", lambda *a, **k: pytest.fail("metrics built"))
    out = tmp_path / "r.json"
    assert main(["bench", "semantic", "--jpeg", "--out", str(out)]) == 2
    assert "--jpeg: no quality given and no --timing: nothing to measure" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- 5. --out and the images, checked first

@pytest.mark.parametrize("bench", ["rd", "matched-bytes"])
def test_out_and_images_are_checked_before_any_folder_is_made(bench, images, tmp_path, tiny_model_path, monkeypatch,
                                                              capsys):
    """(an --out naming a file was a raw "[Errno 17] File exists"; under a file "[Errno 20]"; a
    missing images folder or a refused quality left an empty --out behind)"""
    calls = _no_coding(monkeypatch)
    extra = (["--codecs", "jpeg", *RD] if bench == "rd" else
             ["--anchor", "jpeg", "--codec", "vlmcodec", "--model", str(tiny_model_path), "--metrics", "psnr",
              "--quiet"])
    q = "jpeg=" if bench == "rd" else ""
    (tmp_path / "file").write_text("")
    for folder, out, qs, message in (
            (images, tmp_path / "file", "50", f"--out {tmp_path / 'file'}: is a file; name a folder"),
            (images, tmp_path / "file" / "o", "50",
             f"--out {tmp_path / 'file' / 'o'}: cannot write in {tmp_path / 'file'} (a file, not a folder)"),
            (tmp_path / "nowhere", tmp_path / "a" / "out", "50", f"{tmp_path / 'nowhere'}: not a folder of images"),
            (images, tmp_path / "a" / "out", "150", "quality must be whole numbers in [0, 100], got 150")):
        assert main(["bench", bench, str(folder), "--out", str(out), "--qualities", q + qs, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Errno" not in err, err
    assert calls == [] and not (tmp_path / "a").exists() and (tmp_path / "file").read_text() == ""


def test_an_rd_interrupted_before_it_wrote_anything_leaves_no_out_folder(images, tmp_path, monkeypatch):
    def interrupted(self, img, q):
        raise KeyboardInterrupt

    monkeypatch.setattr(classic.JPEG, "encode", interrupted)
    out = tmp_path / "a" / "out"
    kw = dict(codecs=["jpeg"], qualities={"jpeg": [50]}, metric_names=["psnr"], semantic=False, progress=False,
              plots=False, anchors_dir=None)
    with pytest.raises(KeyboardInterrupt):
        rd.run(images, out, **kw)
    assert not (tmp_path / "a").exists()
    out.mkdir(parents=True)  # one this run did not make is left
    with pytest.raises(KeyboardInterrupt):
        rd.run(images, out, **kw)
    assert out.is_dir()
    monkeypatch.undo()
    rd.run(images, tmp_path / "b", **kw)  # one with results in it is kept
    assert (tmp_path / "b" / "rd.json").is_file()


def test_a_matched_bytes_interrupted_before_it_wrote_anything_leaves_no_out_folder(images, tmp_path,
                                                                                   tiny_model_path, monkeypatch,
                                                                                   capsys):
    from vlmcodec.bench import matched_bytes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(matched_bytes, "run", interrupted)
    out = tmp_path / "a" / "out"
    assert main(["bench", "matched-bytes", str(images), "--anchor", "jpeg", "--qualities", "50", "--codec", "vlmcodec",
                 "--model", str(tiny_model_path), "--metrics", "psnr", "--quiet", "--out", str(out)]) == 130
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------- 6. ms-ssim on small images

def test_rd_refuses_ms_ssim_on_small_images_before_any_coding(images, tmp_path, monkeypatch):
    """(it failed only when the first decoded image was scored, after the first quality was coded)"""
    calls = _no_coding(monkeypatch)
    with pytest.raises(ConfigError, match=r"ms-ssim needs images with both sides over 160 px; 2 of 2 are not "
                                          r"\(the smallest 64x64\): leave ms-ssim out of --metrics"):
        rd.run(images, tmp_path / "out", codecs=["jpeg"], qualities={"jpeg": [20, 50]},
               metric_names=["psnr", "ms-ssim"], semantic=False, progress=False, plots=False, anchors_dir=None)
    assert calls == [] and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 7. repeated qualities

def test_repeated_qualities_are_refused(images, tmp_path, tiny_model_path, monkeypatch, capsys):
    """(each gave its own point of the curve, or its own row of the report)"""
    calls = _no_coding(monkeypatch)
    assert main(["bench", "rd", str(images), "--out", str(tmp_path / "rd"), "--codecs", "webp",
                 "--qualities", "webp=50,60,50.0", *RD]) == 2
    assert "bad --qualities 'webp=50,60,50.0': 50 given more than once" in capsys.readouterr().err
    assert main(["bench", "matched-bytes", str(images), "--anchor", "jpeg", "--qualities", "50,50", "--codec",
                 "vlmcodec", "--model", str(tiny_model_path), "--metrics", "psnr", "--quiet",
                 "--out", str(tmp_path / "mb")]) == 2
    assert "--qualities: 50 given more than once" in capsys.readouterr().err
    with pytest.raises(ValueError, match="jpeg: quality 30 given more than once"):  # rd.run called directly
        rd.run(images, tmp_path / "rd", codecs=["jpeg"], qualities={"jpeg": [30, 30]}, metric_names=["psnr"],
               semantic=False, progress=False, plots=False, anchors_dir=None)
    assert calls == [] and not (tmp_path / "rd").exists() and not (tmp_path / "mb").exists()


# --------------------------------------------------------------------------- 8, 9. the CompressAI comparison

def _compressai():
    from vlmcodec.bench.compressai_compat import import_compressai

    try:
        import_compressai("models.google")
    except ImportError as e:
        pytest.skip(f"not available: {e}")


def test_compressai_image_sides_are_checked_before_any_timing(tmp_path, tiny_model_path, monkeypatch, capsys):
    """(speed --compressai timed every backend, bench compressai converted a model, then failed)"""
    _compressai()
    from vlmcodec.bench import codec, speed

    def timed(*args, **kwargs):
        raise AssertionError("timed before the image sides were checked")

    monkeypatch.setattr(speed, "stage_times", timed)
    monkeypatch.setattr(codec, "_codecs", timed)
    folder = write_train_folder(tmp_path / "imgs", n=1, h=64, w=96)
    for argv in (["speed", "--compressai", "--backends", "torch", "--model", str(tiny_model_path)], ["compressai"]):
        assert main(["bench", *argv, "--images", str(folder), "--out", str(tmp_path / "r.json")]) == 2
        err = capsys.readouterr().err
        assert f"--images: {folder / '0.png'} is 96x64; the CompressAI comparison needs sides that are multiples " \
               "of 64" in err
    assert not (tmp_path / "r.json").exists()


def test_compressai_gives_torch_a_writable_array(tmp_path, monkeypatch):
    """(torch.from_numpy of load_image's read-only array: PyTorch's "The given NumPy array is not
    writable" UserWarning in the output; torch warns once a process, so this checks the call)"""
    _compressai()
    import torch

    from vlmcodec.bench import codec

    real, read_only = torch.from_numpy, []

    def from_numpy(arr):
        if sys._getframe(1).f_code.co_filename == codec.__file__ and not arr.flags.writeable:
            read_only.append(arr.shape)
        return real(arr)

    monkeypatch.setattr(torch, "from_numpy", from_numpy)
    folder = write_train_folder(tmp_path / "imgs", n=1, h=64, w=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = codec.run(sorted(folder.iterdir()), ["N128-M192"])
    assert res["N128-M192"]["images"] == 1
    assert read_only == [] and not [w for w in caught if "not writable" in str(w.message)]


# --------------------------------------------------------------------------- 10. progress bars, compare

def test_progress_bars_are_shown_on_a_terminal_only(monkeypatch):
    from vlmcodec.bench.common import progress_bar

    class Terminal:
        def isatty(self):
            return True

        def write(self, s):
            pass

        def flush(self):
            pass

    with progress_bar(3, "x") as bar:  # (stderr captured by pytest: no terminal)
        assert bar.disable
    monkeypatch.setattr(sys, "stderr", Terminal())
    with progress_bar(3, "x") as bar:
        assert not bar.disable
    with progress_bar(3, "x", enabled=False) as bar:
        assert bar.disable


def test_compare_of_one_curve_has_no_empty_vs_section(tmp_path):
    """(a "## vs NAME" of the only curve against itself: a header and no row)"""
    from vlmcodec.bench import compare as cmp

    pts = [{"quality": i, "bpp": b, "psnr": p} for i, (b, p) in enumerate(zip([0.1, 0.2, 0.4], [26, 28, 30]))]
    path = tmp_path / "rd.json"
    path.write_text(json.dumps({"images": ["a.png"], "metrics": [{"name": "psnr", "higher_is_better": True}],
                                "codecs": {"jpeg": {"points": pts}}}))
    curves = [cmp.load_curve(f"mine={path}:jpeg")]
    md = cmp.markdown(cmp.compare(curves, [], ["psnr"]), [], curves)
    assert "## vs" not in md and "## Points at" in md
    anchors = [cmp.load_curve(f"a={path}:jpeg")]
    md = cmp.markdown(cmp.compare(curves, anchors, ["psnr"]), anchors, curves)
    assert "## vs a\n" in md and "## vs mine" not in md
