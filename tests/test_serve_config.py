"""``vlmcodec serve --config FILE``: a TOML file of serve's options, under the flags given."""

import subprocess
import sys

import pytest

from vlmcodec.cli import main, parse_cli
from vlmcodec.errors import ConfigError


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "serve.toml"
    path.write_text(text)
    return str(path)


def test_the_files_options_are_converted_as_flags_and_the_flags_win(tmp_path):
    path = _config(tmp_path, 'host = "0.0.0.0"\nport = 8443\nrate-limit = 20\nrate_burst = 40\n'
                             'trusted-proxy = ["10.0.0.0/8"]\nquiet = true\nlog-format = "json"\n'
                             'max-refine = 10\nquality = 60\n')
    args = parse_cli(["serve", "--config", path])
    assert (args.host, args.port, args.rate_limit, args.rate_burst) == ("0.0.0.0", 8443, 20.0, 40)
    assert args.trusted_proxy == ["10.0.0.0/8"] and args.quiet is True and args.log_format == "json"
    assert args.max_refine == 10 and args.quality == 60.0
    args = parse_cli(["serve", "--config", path, "--port", "9000", "--trusted-proxy", "192.168.1.7"])
    assert args.port == 9000 and args.trusted_proxy == ["10.0.0.0/8", "192.168.1.7"]  # repeatable: added
    assert parse_cli(["serve"]).port == 8080  # without --config, the defaults as they were
    args = parse_cli(["serve", "--config", _config(tmp_path, "idle-timeout = 20\nheader-timeout = 5.5\n")])
    assert (args.idle_timeout, args.header_timeout) == (20.0, 5.5)
    assert (parse_cli(["serve"]).idle_timeout, parse_cli(["serve"]).header_timeout) == (60.0, 30.0)
    args = parse_cli(["serve", "--config", _config(tmp_path, 'warmup = ["a.png"]\n'), "--warmup", "b.png", "c.png"])
    assert args.warmup == ["a.png", "b.png", "c.png"]  # added to the file's list, as documented (it replaced it)
    assert parse_cli(["serve", "--warmup", "b.png"]).warmup == ["b.png"]


@pytest.mark.parametrize("text, message", [
    ("prot = 1\n", "unknown option 'prot'"),
    ("port = 8443.5\n", "port must be a whole number, got 8443.5"),  # (was int()'s "invalid literal")
    ('port = "abc"\n', "port must be a whole number, got 'abc'"),
    ("port = true\n", "port must be a whole number, got True"),
    ('timeout = "abc"\n', "timeout must be a number, got 'abc'"),  # (was float()'s "could not convert")
    ("threads = true\n", r"threads must be what its flag takes \(a number or text\), got True"),
    ("max-refine = 5000\n", r"refine must be an int in \[0, 1000\]"),
    ('log-format = "xml"\n', r"log-format must be one of \['json', 'text'\]"),
    ('quiet = "yes"\n', "quiet must be true or false"),
    ("port = [1, 2]\n", "port takes one value"),
    ("config = 'other.toml'\n", "unknown option 'config'"),
    ("port = \n", "is not valid TOML"),
    ("header-timeout = 0\n", "expected a finite number, above 0"),
    ("rate-limit = 5\nrate_limit = 500\n", "'rate-limit' and 'rate_limit' are one option"),  # 500 was taken
])
def test_a_bad_file_is_refused_with_what_is_wrong(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        parse_cli(["serve", "--config", _config(tmp_path, text)])


def test_cli_serve_config_errors_exit_2_and_a_good_file_serves(tmp_path, tiny_model_path, capsys):
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read --config" in capsys.readouterr().err
    path = _config(tmp_path, f'port = 0\nmodel = "{tiny_model_path}"\nrate-limit = 3\nmax-refine = 4\n')
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from vlmcodec.cli import main; sys.exit(main())",
                             "serve", "--config", path], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "3 requests/s per client" in line and "refine up to 4 steps" in line, line
    finally:
        proc.terminate()
        proc.wait(60)
