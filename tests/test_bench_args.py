"""The benches' and bench scripts' arguments: checked where they are given, with one clear error,
and their outputs written whole (an audit's findings: wrong figures, late failures, tracebacks)."""

import json
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmcodec.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _rd(path: Path, curves: dict) -> Path:
    """A hand-made rd.json: codec → (bpps, psnrs), on the same two images."""
    codecs = {name: {"points": [{"quality": i, "bpp": b, "psnr": p} for i, (b, p) in enumerate(zip(*bp))]}
              for name, bp in curves.items()}
    path.write_text(json.dumps({"images": ["a.png", "b.png"], "metrics": [{"name": "psnr", "higher_is_better": True}],
                                "codecs": codecs}))
    return path


@pytest.fixture
def rd_json(tmp_path):
    return _rd(tmp_path / "rd.json", {"vlmcodec": ([0.1, 0.2, 0.4, 0.8], [27, 29, 31, 33]),
                                      "jpeg": ([0.15, 0.3, 0.6, 1.2], [26, 28, 30, 32]),
                                      "webp": ([0.1, 0.2, 0.4, 0.8], [26, 28, 30, 32])})


# --------------------------------------------------------------------------- bench compare

@pytest.mark.parametrize("specs", [
    ["--curve", "v={rd}", "--curve", "v={rd}:jpeg", "--anchor", "webp={rd}:webp"],   # two curves named v
    ["--curve", "webp={rd}", "--curve", "j={rd}:jpeg", "--anchor", "webp={rd}:webp"],  # a curve named as the anchor
    ["--curve", "v={rd}", "--anchor", "w={rd}:webp", "--anchor", "w={rd}:jpeg"],    # two anchors named w
])
def test_compare_refuses_a_name_given_twice(rd_json, specs, capsys):
    """(both rows showed the second curve's BD-rate, or "## vs webp" twice with wrong figures; exit 0)"""
    from vlmcodec.bench import compare

    argv = [s.format(rd=rd_json) for s in specs]
    assert compare.main([*argv, "--bootstrap", "0", "--max-bpp", "1"]) == 2
    out = capsys.readouterr()
    assert "error: --curve/--anchor names must differ" in out.err and out.out == ""
    assert compare.main(["--curve", f"v={rd_json}", "--curve", f"j={rd_json}:jpeg", "--anchor", f"webp={rd_json}:webp",
                         "--bootstrap", "0"]) == 0  # distinct names: as before


def test_compare_checks_out_before_the_run_and_writes_it_whole(rd_json, tmp_path, monkeypatch, capsys):
    """(a folder given as --out failed only after the whole comparison; a write cut short left half a report)"""
    from vlmcodec.bench import compare

    argv = ["--curve", f"v={rd_json}", "--anchor", f"webp={rd_json}:webp", "--bootstrap", "0"]
    real = compare.compare

    def not_run(*a, **k):
        raise AssertionError("compared before --out was checked")

    monkeypatch.setattr(compare, "compare", not_run)
    assert compare.main([*argv, "--out", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err
    monkeypatch.setattr(compare, "compare", real)
    out = tmp_path / "cmp" / "compare.md"
    assert compare.main([*argv, "--out", str(out)]) == 0
    before = out.read_text(), out.with_suffix(".json").read_text()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare.main([*argv, "--out", str(out), "--max-bpp", "1"])
    assert (out.read_text(), out.with_suffix(".json").read_text()) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["compare.json", "compare.md"]


def test_compare_records_the_command_that_reproduces_it(rd_json, tmp_path, capsys):
    """(a compare.md named its curves' files but not the command: one rd.json later overwritten by
    `bench rd --merge` could not be told from the one compared)"""
    out = tmp_path / "cmp dir" / "compare.md"
    argv = ["--curve", f"v={rd_json}", "--anchor", f"webp={rd_json}:webp", "--bootstrap", "0", "--out", str(out)]
    assert main(["bench", "compare", *argv]) == 0
    command = "vlmcodec bench compare " + " ".join(
        f"'{a}'" if " " in a else a for a in argv)  # the folder with a space is quoted
    assert json.loads(out.with_suffix(".json").read_text())["command"] == command
    assert f"`{command}`" in out.read_text().splitlines()[2]


# --------------------------------------------------------------------------- bench throughput

def test_throughput_counts_a_failed_sequential_request_and_exits_2(tmp_path, tiny_model_path, capsys):
    """(the in-process sequential loop stopped at the first failed request: a traceback, no JSON)"""
    from vlmcodec import Codec

    codec = Codec(tiny_model_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    flat = np.full((64, 64, 3), 128, np.uint8)
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(flat).save(folder / "a_flat.png")
    Image.fromarray(noisy).save(folder / "b_noisy.png")
    lowest = [8 * len(codec.encode(im, 0)) / (64 * 64) for im in (flat, noisy)]
    assert lowest[0] < lowest[1]
    out = tmp_path / "tp.json"
    rc = main(["bench", "throughput", "--images", str(folder), "--model", str(tiny_model_path), "--requests", "4",
               "--concurrency", "2", "--network-workers", "1", "--max-bpp", str(sum(lowest) / 2), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "4 of 16 requests failed (BudgetError 4)" in err  # the noisy image's encodes, in the loop and the Engine
    enc = json.loads(out.read_text())["results"]["encode"]
    assert enc["sequential"]["failed"] == 2 and enc["sequential"]["ok"] == 2
    assert enc["sequential"]["errors"] == {"BudgetError": 2} and "BudgetError" in enc["sequential"]["first_error"]
    assert enc["engine_c2"]["failed"] == 2


@pytest.mark.parametrize("option, value", [("--max-delay-ms", "-5"), ("--max-delay-ms", "nan"),
                                           ("--max-delay-ms", "inf"), ("--max-delay-ms", "x"),
                                           ("--max-bpp", "0"), ("--max-bpp", "nan")])
def test_throughput_delay_and_budget_are_checked_by_the_parser(tmp_path, option, value, capsys):
    """(a negative or NaN delay was refused by the Engine, after the sequential loops had run)"""
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["bench", "throughput", "--images", str(tmp_path / "empty"), f"{option}={value}"])
    assert e.value.code == 2 and f"argument {option}: expected a finite number" in capsys.readouterr().err


# --------------------------------------------------------------------------- bench compressai

def test_compressai_configs_are_stripped_and_checked():
    """(any name ran the default-weights arm; "default-weights, N128-M192" ran default twice)"""
    from vlmcodec.bench.codec import config_list

    assert config_list("default-weights, N128-M192") == ["default-weights", "N128-M192"]


@pytest.mark.parametrize("value, message", [("N128", "unknown N128; choose from N128-M192, default-weights"),
                                            ("default-weights,default-weights", "default-weights given twice"),
                                            (",", "none given")])
def test_compressai_refuses_unknown_configs(tmp_path, value, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "compressai", "--configs", value, "--out", str(tmp_path / "c.json")])
    assert e.value.code == 2 and message in capsys.readouterr().err


# --------------------------------------------------------------------------- bench semantic

def test_semantic_checks_out_before_the_run(tmp_path, monkeypatch, capsys):
    """(a folder given as --out failed only after every metric had run)"""
    from vlmcodec.bench import semantic

    class Ran(Exception):
        pass

    def ran():
        raise Ran

    monkeypatch.setattr(semantic, "semantic_metrics", ran)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "a.png")
    assert semantic.main(["--images", str(folder), "--jpeg", "10", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is a folder" in err
    out = tmp_path / "sem" / "r.json"  # no quality and no --timing: nothing to measure, nothing written
    assert semantic.main(["--jpeg", "--out", str(out)]) == 2
    assert "nothing to measure" in capsys.readouterr().err and not out.exists()
    assert semantic.main(["--jpeg", "10", "30", "10", "--out", str(out)]) == 2  # (measured and reported twice)
    assert "--jpeg: quality 10 given more than once" in capsys.readouterr().err and not out.exists()


# --------------------------------------------------------------------------- bench rd's plots and report

def _rd_result() -> dict:
    return {"metrics": [{"name": "psnr"}], "images": ["a.png"], "images_dir": "imgs",
            "codecs": {"jpeg": {"label": "JPEG", "points": [{"bpp": 0.2, "psnr": 28.0}, {"bpp": 0.5, "psnr": 31.0}]}}}


def test_plots_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """(savefig wrote in place: an interrupted re-run left a truncated PNG/SVG instead of the old one)"""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from vlmcodec.bench import plots

    assert plots.plot_metric(_rd_result(), "psnr", tmp_path, with_anchors=False) == ["rd_psnr.png", "rd_psnr.svg"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def cut_short(self, fname, *args, **kwargs):
        if isinstance(fname, (str, os.PathLike)):
            with open(fname, "wb") as f:
                f.write(b"\x89PNG partial")
        else:
            fname.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", cut_short)
    with pytest.raises(KeyboardInterrupt):
        plots.plot_metric(_rd_result(), "psnr", tmp_path, with_anchors=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_rd_report_is_written_whole(tmp_path, monkeypatch):
    from vlmcodec.bench import report

    path = tmp_path / "report.md"
    path.write_text("the old report\n")
    monkeypatch.setattr(report, "render", lambda result: "the new report\n")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report.write_report({}, path)
    assert path.read_text() == "the old report\n" and [p.name for p in tmp_path.iterdir()] == ["report.md"]
    monkeypatch.undo()
    monkeypatch.setattr(report, "render", lambda result: "the new report ✓\n")
    report.write_report({}, path)
    assert path.read_text(encoding="utf-8") == "the new report ✓\n"


# --------------------------------------------------------------------------- bench matched-bytes, entropy, backends

def test_matched_bytes_refuses_no_metrics(tmp_path, capsys):
    """(--metrics '' ran the whole comparison with no metric, exit 0)"""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(folder / "a.png")
    rc = main(["bench", "matched-bytes", str(folder), "--metrics", " , ", "--qualities", "50", "--codec", "vlmcodec",
               "--out", str(tmp_path / "mb"), "--quiet"])
    assert rc == 2 and "--metrics: none given" in capsys.readouterr().err
    assert not (tmp_path / "mb").exists()


def test_entropy_seed_is_checked_by_the_parser_naming_it(tmp_path, capsys):
    """(numpy's "expected non-negative integer" did not say which option)"""
    with pytest.raises(SystemExit) as e:
        main(["bench", "entropy", "--seed", "-1", "--n", "64", "--repeats", "1", "--json", str(tmp_path / "e.json")])
    assert e.value.code == 2 and "argument --seed: expected a whole number, at least 0" in capsys.readouterr().err


def test_backends_without_images_is_one_error_exit_2(tmp_path, capsys):
    """(a bare "no images in DIR", exit 1, not the `vlmcodec: error: …` every failure prints)"""
    (tmp_path / "empty").mkdir()
    assert main(["bench", "backends", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "b.json")]) == 2
    assert f"vlmcodec: error: no images in {tmp_path / 'empty'}" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["compressai", "backends", "semantic", "entropy", "kernels"])
def test_bench_usage_names_the_command_that_runs_it(name, capsys):
    """(usage lines said "vlmcodec [-h] …" or "python -m vlmcodec.bench.X")"""
    with pytest.raises(SystemExit) as e:
        main(["bench", name, "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"usage: vlmcodec bench {name} [-h]")


# --------------------------------------------------------------------------- the bench scripts' counts

def _script_main(monkeypatch, name: str, argv: list[str]):
    """Run scripts/NAME.py's main() with ``argv`` as its command line."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    module = runpy.run_path(str(ROOT / "scripts" / f"{name}.py"), run_name=f"script_{name}")
    monkeypatch.setattr(sys, "argv", [f"scripts/{name}.py", *argv])
    return module["main"]()


@pytest.mark.parametrize("name, argv, message", [
    ("allocator_bench", ["--rounds", "0"], "--rounds: expected a whole number, at least 1"),
    ("refine_fairness", ["--rounds", "0"], "--rounds: expected a whole number, at least 1"),
    ("cold_start_bench", ["--rounds", "0"], "--rounds: expected a whole number, at least 1"),
    ("serve_nodelay_bench", ["--rounds", "0"], "--rounds: expected a whole number, at least 1"),
    ("rate_limit_fairness", ["--rounds", "0"], "--rounds: expected a whole number, at least 1"),
    ("rate_limit_fairness", ["--seconds", "nan"], "--seconds: expected a finite number, above 0, got 'nan'"),
    ("rate_limit_fairness", ["--interval", "0"], "--interval: expected a finite number, above 0, got '0'"),
    ("rate_limit_fairness", ["--rate-limit", "-2"], "--rate-limit: expected a finite number, above 0"),
    ("priority_serving", ["--rounds", "0"], "--rounds: expected a whole number, at least 1"),
    ("priority_serving", ["--bulk-threads", "0"], "--bulk-threads: expected a whole number, at least 1"),
    ("hangup_goodput", ["--rounds", "-1"], "--rounds: expected a whole number, at least 1"),
    ("hangup_goodput", ["--clients", "0"], "--clients: expected a whole number, at least 1"),
    ("hangup_goodput", ["--client-timeout", "inf"], "--client-timeout: expected a finite number, above 0"),
    ("hangup_goodput", ["--server-timeout", "0"], "--server-timeout: expected a finite number, above 0"),
    ("refine_serving", ["--rounds", "0"], "--rounds: expected a whole number, at least 1"),
    ("refine_serving", ["--refine", "0"], "--refine: expected a whole number, at least 1"),
    ("rate_control_bench", ["--limit", "-1"], "--limit: expected a whole number, at least 0"),
    ("rate_control_bench", ["--images", "{empty}"], "no images in {empty}"),
    ("rate_control_bench", ["--images", "{missing}"], "image folder not found: {missing}"),
    ("rate_control_bench", ["--modes", "full,128"], "--modes: unknown 128"),
    ("allocator_bench", ["--images", "{empty}"], "no images in {empty}"),
])
def test_bench_scripts_refuse_bad_counts_and_empty_folders(tmp_path, monkeypatch, capsys, name, argv, message):
    """(--rounds 0: a StatisticsError or IndexError after the work, or "runs": [] and exit 0;
    rate_control_bench --images of no image / --limit 0: IndexError, --limit -1 left out the last image)"""
    (tmp_path / "empty").mkdir()
    where = {"empty": tmp_path / "empty", "missing": tmp_path / "missing"}
    argv = [a.format(**where) for a in argv] + ["--out", str(tmp_path / "out.json")]
    with pytest.raises(SystemExit) as e:
        _script_main(monkeypatch, name, argv)
    assert e.value.code == 2 and message.format(**where) in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_client_bench_args_refuse_zero_rounds_and_clients(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import _served

    for argv in (["--rounds", "0"], ["--concurrency", "0"]):
        monkeypatch.setattr(sys, "argv", ["bench.py", *argv])
        with pytest.raises(SystemExit) as e:
            _served.client_bench_args("doc", 3)
        assert e.value.code == 2 and f"{argv[0]}: expected a whole number, at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["webp@", "vlmcodec@"])
def test_a_codec_name_with_an_empty_side_is_refused(name):
    """"webp@" ran plain webp under another name (exit 0): an empty side is refused as "webp@abc" is."""
    from vlmcodec.bench.rd import make_codec

    with pytest.raises(ValueError, match="after '@' give the consumer's short side"):
        make_codec(name)


def test_rd_goes_by_the_names_codecs_give_themselves(tmp_path):
    """webp@256 and webp@0256 are one codec: it ran twice as two curves, and --qualities spelt one
    way did not reach the other."""
    from PIL import Image

    from vlmcodec.cli import main

    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(images / "a.png")
    out = tmp_path / "rd"
    assert main(["bench", "rd", str(images), "--out", str(out), "--codecs", "webp@64,webp@064",
                 "--qualities", "webp@064=40", "--metrics", "psnr", "--no-semantic", "--no-plots",
                 "--quiet"]) == 0
    curves = json.loads((out / "rd.json").read_text())["codecs"]
    assert list(curves) == ["webp@64"]
    assert [p["quality"] for p in curves["webp@64"]["points"]] == [40]


@pytest.mark.parametrize("module, args, message", [
    ("throughput", ["--images", "/nonexistent"], "vlmcodec: error: image folder not found: /nonexistent"),
    ("compare", ["--curve", "a=/nonexistent.json", "--anchor", "b=/nonexistent.json"],
     "vlmcodec bench compare: error: curve a: cannot read /nonexistent.json"),
    ("cli", ["rd", "--out", "/nonexistent/x", "--images", "/nonexistent"], "vlmcodec: error: "),
])
def test_python_dash_m_of_a_bench_module_is_the_bench_command(module, args, message):
    """``python -m vlmcodec.bench.MODULE`` ran the module's own main: errors were tracebacks (exit 1)
    where ``vlmcodec bench NAME`` prints one line and exits 2."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", f"vlmcodec.bench.{module}", *args], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]


def test_every_bench_module_with_a_main_runs_as_its_command():
    """Each bench module's ``__main__`` goes through ``vlmcodec bench NAME`` (main_of_module)."""
    from pathlib import Path

    import vlmcodec.bench as bench_pkg
    from vlmcodec.bench.cli import PASSTHROUGH, main_of_module

    folder = Path(bench_pkg.__file__).parent
    modules = [p.stem for p in folder.glob("*.py") if 'if __name__ == "__main__":' in p.read_text()]
    assert len(modules) >= 9
    for m in modules:
        text = (folder / f"{m}.py").read_text()
        if m == "cli":
            continue
        assert m in PASSTHROUGH.values(), m
        assert f'main_of_module("{m}")' in text, m
    with pytest.raises(ValueError, match="not a bench command's module"):
        main_of_module("nope")
