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


def test_the_readme_api_type_checks_and_mistakes_are_caught(tmp_path, monkeypatch):
    api = pytest.importorskip("mypy.api", reason="mypy not installed (pip install -e '.[test]')")
    monkeypatch.setenv("MYPYPATH", str(_installed_layout(tmp_path)))
    good, bad = TYPING / "api_usage.py", TYPING / "bad_usage.py"
    out, err, status = api.run(["--follow-imports=silent", "--ignore-missing-imports", "--no-error-summary",
                                "--cache-dir", str(tmp_path / "cache"), "--show-error-codes", str(good), str(bad)])
    assert status in (0, 1), err
    # (file, line, message) of each error; mypy names files relative to the working directory
    errors = [(Path(f).resolve(), int(n), msg) for f, n, msg in re.findall(r"^(.+?):(\d+): error: (.*)$", out, re.M)]
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
