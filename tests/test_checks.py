"""vlmcodec.checks: the shared checks of settings (one wording across the package)."""

import argparse
import math

import numpy as np
import pytest

from vlmcodec.checks import check_count, check_number, check_seconds, whole_number_arg
from vlmcodec.errors import ConfigError


def test_check_count_takes_whole_numbers_only():
    assert check_count("n", 3) == 3 and type(check_count("n", np.int64(3))) is int
    assert check_count("n", 0, least=0) == 0
    assert check_count("n", None, none="the default") is None
    for bad in (0, -1, 2.5, 3.0, True, False, "3", None, math.nan, [3], np.float32(2)):
        with pytest.raises(ConfigError, match=r"^n must be a whole number, at least 1, got "):
            check_count("n", bad)
    with pytest.raises(ConfigError, match=r"at least 1 \(or None: the default\), got 0$"):
        check_count("n", 0, none="the default")
    with pytest.raises(ConfigError, match=r"got 10\.0 \(a float: give an int\)$"):  # (10.0 is whole: why then)
        check_count("max_bytes", 10.0)
    with pytest.raises(ConfigError, match=r"got 2\.5$"):
        check_count("n", 2.5)
    with pytest.raises(ConfigError, match=r"got 0\.0$"):  # (0 would be refused too: no hint to give an int)
        check_count("n", 0.0)


def test_check_seconds_and_number():
    assert check_seconds("t", None) is None and check_seconds("t", 2) == 2.0 and check_seconds("t", np.float32(0.5)) == 0.5
    assert check_seconds("t", 1e7) == 1e7
    for bad in (0, -1.0, math.inf, math.nan, True, "1", [1.0], 1e10, 10_000_001):
        with pytest.raises(ConfigError, match=r"^t must be a finite number of seconds above 0 and at most 1e\+07 \(or None"):
            check_seconds("t", bad)
    assert check_number("d", 0) == 0.0 and check_number("d", 2.5, least=1) == 2.5 and check_number("d", 3, most=3) == 3
    with pytest.raises(ConfigError, match=r"^d must be a finite number, at least 0 and at most 3, got 4$"):
        check_number("d", 4, most=3)
    for bad in (-0.1, math.inf, math.nan, True, None, "0"):
        with pytest.raises(ConfigError, match=r"^d must be a finite number, at least 0, got "):
            check_number("d", bad)


def test_whole_number_arg_parses_command_line_text():
    parse = whole_number_arg(1)
    assert parse("12") == 12 and parse("1_000") == 1000
    # underscores only as Python writes them: between digits, one at a time (as the float options take them)
    for bad in ("0", "-3", "2.5", "x", "", "_5", "5_", "1__0", "_"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number, at least 1, got"):
            parse(bad)
    assert whole_number_arg(0)("0") == 0


def test_check_in_range():
    from vlmcodec.checks import check_in_range

    assert check_in_range("q", 0, 0, 100) == 0.0 and check_in_range("q", np.float32(100), 0, 100) == 100.0
    for bad in (-0.01, 100.5, math.nan, True, "50", None):
        with pytest.raises(ConfigError, match=r"^q must be a number in \[0, 100\], got "):
            check_in_range("q", bad, 0, 100)
    with pytest.raises(ConfigError, match=r"in \[0, 1\] \(a unit\), got 2"):
        check_in_range("c", 2, 0, 1, unit="a unit")


def test_torch_devices_are_checked_in_one_wording():
    """The setting's device: a name torch does not read or a kind it does not take is a
    ConfigError naming the setting; CUDA where torch sees no GPU is BackendUnavailableError."""
    import torch

    from vlmcodec.devices import torch_device
    from vlmcodec.errors import BackendUnavailableError

    assert torch_device("cpu", "device") == torch.device("cpu")
    for bad in ("foo", "meta", "mps", 3, None):
        with pytest.raises(ConfigError, match=r"^x must be 'cpu', 'cuda' or 'cuda:N', got "):
            torch_device(bad, "x")
    with pytest.raises(ConfigError, match=r"^x 'foo': "):  # any kind: torch's own message
        torch_device("foo", "x", kinds=None)
    assert torch_device("meta", "x", kinds=None).type == "meta"
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(BackendUnavailableError, match=f"x '{name}' not available: torch sees no CUDA GPU"):
                torch_device(name, "x")


def test_environment_switches_take_on_and_off_words_and_warn_of_others(monkeypatch):
    """VLMCODEC_TUNE_MALLOC / VLMCODEC_CHECK_MEMORY: "disable", "n" or "none" were on, silently."""
    import warnings

    from vlmcodec.console import env_switch
    from vlmcodec.errors import VlmcodecWarning

    monkeypatch.delenv("VLMCODEC_X", raising=False)
    assert env_switch("VLMCODEC_X") is True
    for value, on in (("0", False), (" OFF ", False), ("no", False), ("false", False), ("1", True), ("yes", True),
                      ("on", True), ("", True)):
        monkeypatch.setenv("VLMCODEC_X", value)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert env_switch("VLMCODEC_X") is on, value
    for value in ("disable", "n", "none"):
        monkeypatch.setenv("VLMCODEC_X", value)
        with pytest.warns(VlmcodecWarning, match=f"VLMCODEC_X='{value}' is neither on .* taken as on"):
            assert env_switch("VLMCODEC_X") is True


def test_a_switch_is_a_python_or_numpy_boolean():
    from vlmcodec.checks import is_switch

    assert all(is_switch(v) for v in (True, False, np.bool_(True), np.False_))
    assert not any(is_switch(v) for v in (1, 0, "false", "true", None, np.int64(1), 1.0))


def test_a_thread_count_is_at_most_max_threads(tmp_path):
    """100 000 threads crashed the process: MAX_THREADS is the most a pool or torch is given,
    and a codec refuses more before it sets torch's threads or loads a model."""
    import torch

    from vlmcodec import Codec
    from vlmcodec.checks import MAX_THREADS, check_threads

    assert check_threads("t", MAX_THREADS) == MAX_THREADS and check_threads("t", None, none="the default") is None
    for kwargs in ({}, {"none": "the default"}):
        with pytest.raises(ConfigError, match=f"t must be at most {MAX_THREADS} threads, got {MAX_THREADS + 1}"):
            check_threads("t", MAX_THREADS + 1, **kwargs)
    before = torch.get_num_threads()
    try:
        with pytest.raises(ConfigError, match=f"threads must be at most {MAX_THREADS} threads, got 100000"):
            Codec(tmp_path / "no-such-model.safetensors", threads=100_000)  # (the model is never looked for)
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
