"""Bearer tokens for ``vlmcodec serve``: several at once, each with a client name.

A token file holds one token a line, as ``TOKEN`` or ``NAME TOKEN``, optionally followed by
the client's own rate limit, ``rate=R`` (requests a second) and ``burst=B``, or
``rate=unlimited``, which replace the server's ``--rate-limit`` for that client, and its
priority, ``priority=P`` (its requests' default and the most they may ask; 0 for the clients
without one; see ``Engine.submit_encode``), and ``refine=N``, the most refinement steps its
encodes may ask, in place of the server's ``--max-refine``; blank lines and
lines that start with ``#`` are skipped. Several tokens let each client have its own (revoke one
by deleting its line and sending SIGHUP) and let a rotation overlap: the new token is added, clients move to
it, the old line goes. The name (``token1``, ``token2``, … for unnamed lines, in file order) is
what the access log and ``/stats`` show of the client; a token itself is never logged.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError

# RFC 6750's b64token: what a client can put after "Bearer " without quoting
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_TOKEN_RULE = "a token is made of A-Z a-z 0-9 - . _ ~ + / (and = at its end), as an HTTP bearer token must be"
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_OPTION = re.compile(r"(rate|burst|priority|refine)=[^=]")  # a token has '=' only at its end, so never matches


@dataclass(frozen=True)
class TokenFile:
    """What a token file gives: ``tokens`` {name: token}, and each client's own options where its
    line has them: ``limits`` {name: (rate, burst), or None for ``rate=unlimited``},
    ``priorities`` {name: P}, ``max_refine`` {name: N}."""

    tokens: dict[str, str] | None  # None: no token file
    limits: dict[str, tuple[float, int] | None] = field(default_factory=dict)
    priorities: dict[str, int] = field(default_factory=dict)
    max_refine: dict[str, int] = field(default_factory=dict)


def parse_token_file(text: str, source: str = "token file") -> dict[str, str]:
    """``{name: token}`` from a token file's text (see the module's docstring); ConfigError for a
    file with no token, a malformed line, or a token or name given twice."""
    tokens = read_token_file(text, source).tokens
    assert tokens is not None  # (None is a server's without a token file; a file read has tokens)
    return tokens


def read_token_file(text: str, source: str = "token file") -> TokenFile:
    """The tokens of a token file's text and its clients' own options: rate limits (``rate=R
    [burst=B]``, burst defaulting to one second's worth; ``rate=unlimited``: None, exempt from
    the server's), priorities (``priority=P``) and refinement caps (``refine=N``). ConfigError as
    ``parse_token_file``, and for a malformed option."""
    tokens: dict[str, str] = {}
    limits: dict[str, tuple[float, int] | None] = {}
    priorities: dict[str, int] = {}
    max_refine: dict[str, int] = {}
    unnamed = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        words = line.split()
        option_words = [w for w in words if _OPTION.match(w)]
        fields = [w for w in words if not _OPTION.match(w)]
        if len(fields) == 1:
            unnamed += 1
            name, token = f"token{unnamed}", fields[0]
        elif len(fields) == 2:
            name, token = fields
        else:
            raise ConfigError(f"{where}: expected 'TOKEN' or 'NAME TOKEN' (then rate=R burst=B priority=P refine=N "
                              f"if any), got {len(fields)} fields")
        _add(tokens, name, token, where)
        rate_words = [w for w in option_words if w.startswith(("rate=", "burst="))]
        if rate_words:
            limits[name] = _limit(rate_words, where)
        for key, parsed, check in (("priority", priorities, _checked_priority), ("refine", max_refine, _checked_refine)):
            words = [w for w in option_words if w.startswith(f"{key}=")]
            if words:
                parsed[name] = _integer_option(key, words, where, check)
    if not tokens:
        raise ConfigError(f"{source} is empty (no token in it)")
    return TokenFile(tokens, limits, priorities, max_refine)


def check_client_priorities(priorities: Mapping[str, int] | None, tokens: Mapping[str, str] | None) -> dict[str, int]:
    """Clients' priorities validated: each a client the tokens name, with an int as
    ``Engine.submit_encode`` takes it. ConfigError otherwise."""
    return check_client_option("a priority", priorities, tokens, _checked_priority)


def check_client_max_refine(max_refine: Mapping[str, int] | None, tokens: Mapping[str, str] | None) -> dict[str, int]:
    """Clients' refinement caps validated: each a client the tokens name, with steps as
    ``Codec(refine=)`` takes them. ConfigError otherwise."""
    return check_client_option("a refine cap", max_refine, tokens, _checked_refine)


def check_client_option(what: str, values: Mapping | None, tokens: Mapping[str, str] | None, check) -> dict:
    """{name: check(value)} for clients' own options (``what``: "a priority"...); ConfigError for a
    client no token names, or a value ``check`` refuses (ValueError), naming the client."""
    out = {}
    if values is not None and not isinstance(values, Mapping):  # (was an AttributeError: no .items)
        raise ConfigError(f"{what} per client is a mapping {{client name: value}}, got {type(values).__name__}")
    for name, value in (values or {}).items():
        if tokens is None or name not in tokens:
            raise ConfigError(f"{what} for client {name!r}, whom no token names")
        try:
            out[name] = check(value)
        except ValueError as e:
            raise ConfigError(f"client {name!r}: {e}") from None
    return out


def _checked_priority(value: int) -> int:
    from .engine import check_priority

    return check_priority(value)


def _checked_refine(value: int) -> int:
    from ..refine import check_refine_steps

    return check_refine_steps(value)


def _integer_option(key: str, words: list[str], where: str, check) -> int:
    """A client's integer option (``priority=``, ``refine=``) from its line's words."""
    if len(words) > 1:
        raise ConfigError(f"{where}: {key}= given twice")
    text = words[0].split("=", 1)[1]
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{where}: {key} must be an integer, got {text!r}") from None
    try:
        return check(value)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _limit(option_words: list[str], where: str) -> tuple[float, int] | None:
    """A client's own limit from its line's ``rate=`` / ``burst=`` words: (rate, burst), or None
    for ``rate=unlimited``."""
    from .rate_limit import check_rate

    options = dict(w.split("=", 1) for w in option_words)
    if len(options) != len(option_words):
        raise ConfigError(f"{where}: rate= or burst= given twice")
    if "rate" not in options:
        raise ConfigError(f"{where}: burst= needs rate= on the same line")
    if options["rate"] == "unlimited":  # exempt from the server's --rate-limit
        if "burst" in options:
            raise ConfigError(f"{where}: rate=unlimited takes no burst=")
        return None
    try:
        burst = int(options["burst"]) if "burst" in options else None
    except ValueError:
        raise ConfigError(f"{where}: burst must be a whole number, at least 1, got {options['burst']!r}") from None
    try:
        return check_rate(options["rate"], burst)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def token_table(auth_token: str | Sequence[str] | Mapping[str, str] | None) -> dict[str, str] | None:
    """The server's ``{name: token}`` from ``CodecServer(auth_token=)``: one token (a string),
    several (a sequence, named ``token1``…) or named ones (a mapping); None for no token."""
    if auth_token is None:
        return None
    if isinstance(auth_token, str):
        auth_token = [auth_token]
    if not isinstance(auth_token, Iterable):  # (a number was a TypeError "not iterable")
        raise ConfigError(f"auth_token must be a token, a list of them or {{name: token}}, got "
                          f"{type(auth_token).__name__}")
    items = auth_token.items() if isinstance(auth_token, Mapping) else (
        (f"token{i}", t) for i, t in enumerate(auth_token, 1))
    tokens: dict[str, str] = {}
    for name, token in items:
        _add(tokens, str(name), token.strip() if isinstance(token, str) else token, "auth_token")
    if not tokens:
        raise ConfigError("auth_token is empty")
    return tokens


def check_client_token(token: object) -> str | None:
    """A client's bearer token (``RemoteCodec(token=)``), stripped; None for none. ConfigError,
    never echoing the token, for one that is not a string or not a bearer token's characters
    (it would be sent as ``b'...'``, or fail every request with the token in the traceback)."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise ConfigError(f"token must be a string, got {type(token).__name__}")
    token = token.strip()
    if not _TOKEN.fullmatch(token):
        raise ConfigError("token is empty" if not token else _TOKEN_RULE)
    return token


def _add(tokens: dict[str, str], name: str, token, where: str) -> None:
    if not isinstance(token, str) or not token:
        raise ConfigError(f"{where}: a token is an empty string" if isinstance(token, str) else
                          f"{where}: a token must be a string, got {type(token).__name__}")
    if not _NAME.fullmatch(name):  # it goes into log lines and metric labels as it is
        raise ConfigError(f"{where}: a client name is 1-64 of A-Z a-z 0-9 _ . -, got {name[:70]!r}")
    if not _TOKEN.fullmatch(token):
        raise ConfigError(f"{where}: {_TOKEN_RULE}")
    if name in tokens:
        raise ConfigError(f"{where}: client name {name!r} given twice")
    if token in tokens.values():
        raise ConfigError(f"{where}: the same token given twice (for {name!r} too)")
    tokens[name] = token


def client_of(tokens: Mapping[str, str], authorization: str) -> str | None:
    """The name of the client whose token an ``Authorization`` header carries, None if none does.
    Every token is compared (in constant time each), whichever matches, so that the time taken
    does not tell which line of the file a guess came near."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    presented = value.strip().encode()
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(presented, token.encode()) and found is None:
            found = name
    return found
