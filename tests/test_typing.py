"""The package ships its type hints (``py.typed``): code using the API as the README does
type-checks clean under mypy, and the usual mistakes (a misspelt keyword, a stream taken for
pixels) are caught — before the first run, in the user's editor and CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TYPING = ROOT / "tests" / "typing"


def _installed_layout(tmp_path: Path) -> Path:
    """The package as a wheel lays it out (engine/ as vlmcodec/, with kernels, export and bench
    inside it: pyproject's force-include), made of links, for mypy to find."""
    pkg = tmp_path / "site" / "vlmcodec"
    pkg.mkdir(parents=True)
    for entry in (ROOT / "engine").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for name in ("kernels", "export", "bench"):
        (pkg / name).symlink_to(ROOT / name)
    return pkg.parent


def test_the_package_is_marked_typed():
    assert (ROOT / "engine" / "py.typed").is_file()
    assert '"engine" = "vlmcodec"' in (ROOT / "pyproject.toml").read_text()  # py.typed goes into the wheel with it


# the modules cleared of mypy's errors, as package paths (a folder ends with "/"): none may come back.
# All of them now: the whole package (engine, kernels, export and bench), the probe below aside.
CLEAN_MODULES = ("vlmcodec/",)
PROBE = "_mypy_probe.py"  # a module of one error, added to the package checked


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory) -> list[tuple[str, int, str]]:
    """One mypy run, shared by the tests: the package as installed (all of it) and the usage
    samples in tests/typing; (file, line, message) of each error, a file named by its package path
    (``vlmcodec/codec.py``) or, outside the package, by its resolved path."""
    api = pytest.importorskip("mypy.api", reason="mypy not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("mypy")
    site = _installed_layout(tmp)
    # a module with one known error: the package's errors are reported, and named as read here
    (site / "vlmcodec" / PROBE).write_text('wrong: int = "text"\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MYPYPATH", str(site))
        out, err, status = api.run(["--follow-imports=silent", "--ignore-missing-imports", "--no-error-summary",
                                    "--cache-dir", str(tmp / "cache"), "--show-error-codes",
                                    str(TYPING / "api_usage.py"), str(TYPING / "bad_usage.py"), str(site / "vlmcodec")])
    assert status in (0, 1), err

    def name(file: str) -> str:  # mypy names files relative to the working directory
        path = Path(file).absolute()
        return path.relative_to(site).as_posix() if path.is_relative_to(site) else str(path.resolve())

    return [(name(f), int(n), msg) for f, n, msg in re.findall(r"^(.+?):(\d+): error: (.*)$", out, re.M)]


def test_the_readme_api_type_checks_and_mistakes_are_caught(mypy_errors):
    bad = TYPING / "bad_usage.py"  # (api_usage.py: no error)
    errors = [(Path(f), n, msg) for f, n, msg in mypy_errors if not f.startswith("vlmcodec/")]
    out = "\n".join(f"{f}:{n}: {msg}" for f, n, msg in errors)
    assert errors and not [e for e in errors if e[0] != bad], f"the README's usage does not type-check:\n{out}"
    expected = {
        n: m.group(1)
        for n, line in enumerate(bad.read_text().splitlines(), 1)
        if (m := re.search(r"  # E: (.+)$", line))
    }
    assert len(expected) >= 5
    for n, text in expected.items():
        hits = [msg for _, line, msg in errors if line == n]
        assert any(text in h for h in hits), f"bad_usage.py:{n}: expected {text!r}, got {hits or 'nothing'}\n{out}"
    assert len(errors) == len(expected), out


def test_the_cleared_modules_have_no_mypy_errors(mypy_errors):
    """Hints the code does not keep (a buffer taken for a Module, an Optional never narrowed, a
    sentinel typed object) hide the real mistakes mypy would catch: in the modules cleared, none."""
    assert [n for f, n, _ in mypy_errors if f == f"vlmcodec/{PROBE}"] == [1], "the package was not checked"
    found = [f"{f}:{n}: {msg}" for f, n, msg in mypy_errors if f.startswith(CLEAN_MODULES) and f != f"vlmcodec/{PROBE}"]
    assert not found, "mypy errors in modules cleared of them:\n" + "\n".join(found)
