"""Bearer tokens of `vlmcodec serve` (vlmcodec.runtime.tokens): the token file, the table, matching."""

import pytest

from vlmcodec.errors import ConfigError
from vlmcodec.runtime.tokens import TokenFile, client_of, parse_token_file, token_table


def test_a_token_file_names_its_tokens():
    text = "# clients\n\nalpha-0K\n  crawler  c+r/a.w_l~er==  \nbeta\n"
    assert parse_token_file(text) == {"token1": "alpha-0K", "crawler": "c+r/a.w_l~er==", "token2": "beta"}
    assert parse_token_file("s3cret\n") == {"token1": "s3cret"}  # the one-token file of before


@pytest.mark.parametrize("text, message", [
    ("\n# nothing\n", "is empty"),
    ("a b c\n", "line 1: expected 'TOKEN' or 'NAME TOKEN' .*, got 3 fields"),
    ("x\nname tok\"en\n", "line 2: a token is made of"),
    ("bad/name tok\n", "client name is 1-64"),
    ("a tok1\na tok2\n", "client name 'a' given twice"),
    ("one\ntwo\nb one\n", "the same token given twice"),
    ("tok=en\n", "a token is made of"),  # '=' only at the end
])
def test_a_malformed_token_file_is_refused_with_its_line(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_token_file(text, "tokens.txt")


def test_token_table_takes_one_several_or_named_tokens():
    assert token_table(None) is None
    assert token_table("s3cret\n") == {"token1": "s3cret"}
    assert token_table(["a", "b"]) == {"token1": "a", "token2": "b"}
    assert token_table({"app": "a", "batch": "b"}) == {"app": "a", "batch": "b"}
    for bad, message in [("  ", "empty"), ([], "empty"), ({"x y": "t"}, "client name"), ({"a": 3}, "must be a string"),
                         ({'a"}': "t"}, "client name")]:
        with pytest.raises(ConfigError, match=message):
            token_table(bad)


def test_client_of_names_the_matching_token_only():
    tokens = {"app": "tok-a", "batch": "tok-b"}
    assert client_of(tokens, "Bearer tok-b") == "batch"
    assert client_of(tokens, "bearer  tok-a ") == "app"
    for header in ("", "Bearer", "Bearer tok", "Bearer tok-a-longer", "Basic tok-a", "tok-a"):
        assert client_of(tokens, header) is None, header


def test_serve_reads_a_token_file_written_with_a_byte_order_mark(tmp_path):
    import argparse

    from vlmcodec.cli.serve import _serve_security

    f = tmp_path / "tokens.txt"
    f.write_bytes("\ufeffapp tok-a\r\nbatch tok-b\r\n".encode("utf-8"))  # as Windows Notepad writes it
    args = argparse.Namespace(tls_cert=None, tls_key=None, tls_client_ca=None, auth_token_file=str(f))
    assert _serve_security(args) == (None, TokenFile({"app": "tok-a", "batch": "tok-b"}))


def test_a_token_line_may_carry_the_clients_own_rate_limit():
    from vlmcodec.runtime.tokens import read_token_file

    text = "app tok-a rate=2 burst=5\nbatch tok-b rate=0.5\ninternal tok-i rate=unlimited\nfree tok-c\nxyz==\n"
    parsed = read_token_file(text)
    assert parsed.tokens == {"app": "tok-a", "batch": "tok-b", "internal": "tok-i", "free": "tok-c", "token1": "xyz=="}
    assert parsed.limits == {"app": (2.0, 5), "batch": (0.5, 1), "internal": None} and parsed.priorities == {}
    assert read_token_file("tok rate=3\n") == TokenFile({"token1": "tok"}, {"token1": (3.0, 3)})


def test_a_token_line_may_carry_the_clients_priority_and_refine_cap():
    from vlmcodec.runtime.tokens import read_token_file

    parsed = read_token_file("front tok-f priority=10 rate=5 refine=30\nbulk tok-b priority=-5 refine=0\nother tok-o\n")
    assert parsed.priorities == {"front": 10, "bulk": -5} and parsed.limits == {"front": (5.0, 5)}
    assert parsed.max_refine == {"front": 30, "bulk": 0} and len(parsed.tokens) == 3
    for line, message in [("a t priority=x", "priority must be an integer, got 'x'"),
                          ("a t priority=101", r"priority must be an int in \[-100, 100\]"),
                          ("a t priority=1 priority=2", "priority= given twice"),
                          ("a t refine=-1", r"refine must be an int in \[0, 1000\]"),
                          ("a t refine=2 refine=3", "refine= given twice")]:
        with pytest.raises(ConfigError, match=message):
            read_token_file(line)


@pytest.mark.parametrize("line, message", [
    ("a t rate=x", "a number of requests per second"),
    ("a t rate=0", "at least 1e-06"),
    ("a t burst=3", "burst= needs rate="),
    ("a t rate=1 rate=2", "given twice"),
    ("a t rate=1 burst=0", "whole number, at least 1"),
    ("a t rate=1 burst=1.5", "whole number, at least 1"),
    ("a t rate=unlimited burst=2", "takes no burst"),
])
def test_a_malformed_limit_is_refused_with_its_line(line, message):
    from vlmcodec.runtime.tokens import read_token_file

    with pytest.raises(ConfigError, match=f"tokens.txt line 2: .*{message}"):
        read_token_file("ok tok-ok\n" + line + "\n", "tokens.txt")
