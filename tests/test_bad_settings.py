"""Settings no codec or engine can use are refused where they are given, with the setting named."""

import numpy as np
import pytest


def test_codec_refuses_a_thread_count_below_one_and_other_absurd_settings(tiny_model_path):
    from vlmcodec import Codec
    from vlmcodec.errors import ConfigError
    from vlmcodec.runtime import Engine

    for threads in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="threads must be a whole number, at least 1"):
            Codec(tiny_model_path, threads=threads)
    for max_pixels in (0, -1, float("nan"), "100"):  # (-1 was taken: every image then refused)
        with pytest.raises(ConfigError, match="max_pixels must be a number of pixels, at least 1"):
            Codec(tiny_model_path, max_pixels=max_pixels)
    with pytest.raises(ConfigError, match="device 'foo': .*cpu, cuda"):  # (was torch's RuntimeError)
        Codec(tiny_model_path, device="foo")
    assert Codec(tiny_model_path, threads=np.int64(2), max_pixels=1e6).max_pixels == 1_000_000
    codec = Codec(tiny_model_path, threads=1)
    with pytest.raises(ValueError, match="intra_op_threads must be a whole number, at least 1"):
        Engine(codec, intra_op_threads=0)
    for delay in (float("nan"), -5, float("inf")):  # (NaN was taken)
        with pytest.raises(ValueError, match="max_delay_ms must be a finite number, at least 0"):
            Engine(codec, max_delay_ms=delay)
    for timeout in (-1, 0, float("nan")):  # (taken: every request then timed out at once)
        with pytest.raises(ValueError, match="timeout_s must be a finite number above 0"):
            Engine(codec, timeout_s=timeout)
