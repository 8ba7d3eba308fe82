"""``vlmcodec serve``: its TLS and token files, its --config file, and the server's start and stop."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, VlmcodecError, VlmcodecWarning
from .codecs import _check_refine_options, _codec, _distinct_models, _refine_settings
from .paths import DEFAULT_PNG_LEVEL, IMAGE_SUFFIXES, _load, expand_inputs

if TYPE_CHECKING:
    from ..codec import Codec


def _serve_security(args):
    """(TLS context or None, ``tokens.TokenFile``: the tokens, None without a token file, and
    the clients' own options) from serve's --tls-cert/--tls-key and --auth-token-file; ConfigError for a
    half-given pair, an unreadable file or a token file with no token or a malformed line."""
    from ..runtime.tokens import TokenFile

    ssl_context, token_file = None, TokenFile(None)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (it asks HTTPS clients for certificates)")
    if args.tls_cert:
        import ssl

        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the TLS certificate {args.tls_cert} / key {args.tls_key}: {e}") from None
        if args.tls_client_ca:  # mutual TLS: only clients with a certificate this CA signed get in
            try:
                ssl_context.load_verify_locations(cafile=args.tls_client_ca)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"cannot load --tls-client-ca {args.tls_client_ca}: {e}") from None
            ssl_context.verify_mode = ssl.CERT_REQUIRED
    if args.auth_token_file:
        from ..runtime.tokens import read_token_file

        try:
            text = Path(args.auth_token_file).read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is dropped
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read --auth-token-file {args.auth_token_file}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        token_file = read_token_file(text, f"--auth-token-file {args.auth_token_file}")
    for flag, path in (("--tls-key", args.tls_key), ("--auth-token-file", args.auth_token_file)):
        _warn_if_others_can_read(flag, path)
    return ssl_context, token_file


def _warn_if_others_can_read(flag: str, path: str | None) -> None:
    """A secret (the TLS key, the tokens) in a file other users of the machine may read: a
    VlmcodecWarning naming the fix, as ssh does for its keys (POSIX permissions only)."""
    if not path or os.name != "posix":
        return
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:  # a registry of its own: said at each reload too, not once per process
        warnings.warn_explicit(f"{flag} {path} can be read by other users of this machine (mode {mode:o}): "
                               f"chmod 600 {path}", VlmcodecWarning, __file__, 0, registry={})


def _reload_security(server, args) -> None:
    """SIGHUP: read the certificate, key, client CA and token files again (a rotated certificate or
    token) for the connections to come; a set that fails to load leaves the current one in force."""
    if not (args.tls_cert or args.auth_token_file):
        print("vlmcodec: SIGHUP: nothing to reload (no --tls-cert or --auth-token-file)", file=sys.stderr, flush=True)
        return
    try:
        context, token_file = _serve_security(args)
        # each read once per connection / request; a client's options change with its line
        server.set_clients(token_file.tokens, token_file.limits, token_file.priorities, token_file.max_refine)
    except ConfigError as e:
        print(f"vlmcodec: reload refused, the current certificate and token stay: {e}", file=sys.stderr, flush=True)
        return
    server.ssl_context = context
    print("vlmcodec: reloaded the TLS certificate and token files", file=sys.stderr, flush=True)


def _exposure_warning(host: str, tokens: bool, tls: bool) -> str | None:
    """What a server listening on ``host`` leaves open, if it listens beyond this machine: no
    token (anyone who reaches it can use it), or tokens without TLS (they cross the network in
    clear); None on a loopback address or with both."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback or (tokens and tls):
        return None
    if not tokens:
        return (f"listening on {host} without --auth-token-file: anyone who can reach it can use this server "
                "(give it tokens and TLS, or put it behind a proxy that has them)")
    return (f"listening on {host} with tokens but without TLS: the tokens cross the network in clear "
            "(--tls-cert/--tls-key)")


def cmd_serve(args) -> int:
    import signal

    from ..runtime import Engine
    from ..runtime.server import CodecServer

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    ssl_context, token_file = _serve_security(args)
    samples = expand_inputs(args.warmup, IMAGE_SUFFIXES) if args.warmup else []
    codec = _codec(args)
    codec.model.level_of_quality(args.quality)  # a bad -q fails here, as encode's does
    # older models, kept to decode their streams (and to encode with ?model=): one engine each
    others = _distinct_models(args, codec, [(path, _codec(args, path)) for path in args.extra_model or ()])
    refining = bool(args.max_refine or any(token_file.max_refine.values()))
    if args.refine_cost and not (args.rate_limit or any(token_file.limits.values())):
        raise ConfigError("--refine-cost needs a rate limit to count against (--rate-limit, or a token-file "
                          "line's rate=R)")
    _check_refine_options(args, refining, "--max-refine STEPS, or a token-file line's refine=N (how the refined "
                                          "encodes run)")
    if refining:  # the refinement's teacher loads now: a missing package fails here, not on a request
        for each in (codec, *others):
            each.refiner()
    engines = [Engine(c, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                      network_workers=args.network_workers, max_queue=args.max_queue, block=False,
                      timeout_s=args.timeout, refine_workers=args.refine_workers) for c in [codec, *others]]

    def shut_down_engines(drain: bool) -> None:
        for each in engines:
            each.shutdown(drain=drain)

    if samples:
        t0 = time.perf_counter()
        try:
            images = [_load(f, codec.max_pixels) for f in samples]
            records = [r for each in engines  # every model's
                       for r in each.warmup(images, quality=args.quality, refine=refining)]
        except BaseException:
            shut_down_engines(drain=False)
            raise
        sizes = sorted({r["coded_size"] for r in records})
        models = f" of {len(engines)} models" if len(engines) > 1 else ""
        print(f"vlmcodec: warmed up {len(records)} shapes{models} ({len(sizes)} coded sizes) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    png_level = DEFAULT_PNG_LEVEL if args.png_level is None else args.png_level  # (PNG responses only)
    try:
        server = CodecServer(engines, args.host, args.port, max_body=max(1, int(args.max_body_mb * 2**20)),
                             png_level=png_level, quiet=args.quiet, quality=args.quality,
                             max_connections=args.max_connections, ssl_context=ssl_context, auth_token=token_file.tokens,
                             rate_limit=args.rate_limit, rate_burst=args.rate_burst, client_limits=token_file.limits,
                             log_format=args.log_format, max_refine=args.max_refine,
                             trusted_proxies=args.trusted_proxy, client_priorities=token_file.priorities,
                             client_max_refine=token_file.max_refine, max_refine_pixels=args.max_refine_pixels,
                             refine_cost=args.refine_cost, idle_timeout=args.idle_timeout,
                             header_timeout=args.header_timeout,
                             max_connections_per_address=args.max_connections_per_address)
    except (OSError, ConfigError) as e:
        shut_down_engines(drain=False)
        if isinstance(e, ConfigError):
            raise
        raise VlmcodecError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    # SIGTERM (a container stopping) ends the loop as Ctrl-C does: answer what is in flight, then exit
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
        if hasattr(signal, "SIGHUP"):  # always: its default action would kill the server, requests in flight too
            signal.signal(signal.SIGHUP, lambda *_: _reload_security(server, args))
    from ..runtime.forwarded import trust_warning

    for warning in (_exposure_warning(args.host, bool(token_file.tokens), bool(ssl_context)),
                    trust_warning(server.trusted_proxies)):
        if warning:
            print(f"vlmcodec: warning: {warning}", file=sys.stderr, flush=True)
    also = f" (and {', '.join(map(_model_label, others))} for their streams)" if others else ""
    limit = _serving_limits(server, args, codec)
    print(f"vlmcodec: serving model {_model_label(codec)}{also} ({args.backend} backend{limit}) on {server.url}: "
          "POST /encode, /decode; GET /health, /stats, /metrics (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        shut_down_engines(drain=True)
    print("vlmcodec: server stopped", file=sys.stderr)
    return 0


def _serving_limits(server, args, codec) -> str:
    """The start line's list of the limits and client options in force (", 20 requests/s per
    client, burst 40, ..."), or ""."""
    limiter = server.rate_limiter
    # (each text made only where its option is given: the rate of no limit is None)
    parts = [(limiter.limit, lambda: f"{limiter.rate:g} requests/s per client, burst {limiter.burst}"),
             (server.max_connections_per_address,
              lambda: f"{server.max_connections_per_address} connections per address"),
             (server.client_limits, lambda: f"{len(server.client_limits)} client(s) with a limit of their own"),
             (server.client_priorities,
              lambda: f"{len(server.client_priorities)} client(s) with a priority of their own"),
             (server.trusted_proxies, lambda: f"clients forwarded by {', '.join(map(str, server.trusted_proxies))}"),
             (server.client_max_refine,
              lambda: f"{len(server.client_max_refine)} client(s) with a refine cap of their own"),
             (server.max_refine, lambda: f"refine up to {server.max_refine} steps on {args.refine_workers} worker(s)")]
    text = "".join(f", {part()}" for given, part in parts if given) + _refine_settings(codec, "refinement's ")
    if server.refine_cost:
        text += f", a refinement step counts as {server.refine_cost:g} requests"
    return text


def _model_label(codec: "Codec") -> str:
    """A served model's fingerprint, and the one its streams carry where it shares another's decoder."""
    own = codec.fingerprint.hex()
    if codec.stream_fingerprint == codec.fingerprint:
        return own
    return f"{own} (writing streams that carry {codec.stream_fingerprint.hex()})"


def apply_serve_config(serve_parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``serve --config FILE``: each key of the TOML file (a flag's name without ``--``; ``-`` or
    ``_``) becomes that option's default, converted and checked as the flag's text would be, so
    that the flags given on the command line override it (a repeatable one adds to the file's
    list). ConfigError names an unreadable file, an unknown key or a bad value."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    path = pre.parse_known_args(argv)[0].config
    if not path:
        return
    import tomllib

    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read --config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path} is not valid TOML: {e}") from None
    actions = {a.dest: a for a in serve_parser._actions if a.option_strings and a.dest not in ("help", "config")}
    defaults: dict[str, object] = {}
    keys: dict[str, str] = {}
    for key, value in table.items():
        action = actions.get(key.replace("-", "_"))
        if action is None:
            known = ", ".join(sorted(d.replace("_", "-") for d in actions))
            raise ConfigError(f"--config {path}: unknown option {key!r} (serve's options: {known})")
        if action.dest in keys:  # TOML refuses a key twice, not rate-limit beside rate_limit
            raise ConfigError(f"--config {path}: {keys[action.dest]!r} and {key!r} are one option")
        keys[action.dest] = key
        defaults[action.dest] = _config_value(action, value, f"--config {path}: {key}")
    serve_parser.set_defaults(**defaults)


def _config_value(action: argparse.Action, value, where: str):
    """A config file's value for ``action``, as its flag's text would give it."""
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    many = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    if many:
        values = value if isinstance(value, list) else [value]
        return [_config_item(action, v, where) for v in values]
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{where} takes one value, got {value!r}")
    return _config_item(action, value, where)


def _config_item(action: argparse.Action, value, where: str):
    # what int and float take, said as such ("invalid literal for int() with base 10")
    kind = {int: "a whole number", float: "a number"}.get(action.type)  # type: ignore[call-overload]
    if isinstance(value, (list, dict)) or (isinstance(value, bool) and action.type is not None):
        raise ConfigError(f"{where} must be {kind or 'what its flag takes (a number or text)'}, got {value!r}")
    text = value if isinstance(value, str) else str(value)
    assert action.type is None or callable(action.type)  # (no serve option names its type as a string)
    try:
        out = action.type(text) if action.type is not None else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
        raise ConfigError(f"{where} must be {kind}, got {value!r}" if kind else f"{where}: {e}") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"{where} must be one of {sorted(action.choices)}, got {value!r}")
    return out
