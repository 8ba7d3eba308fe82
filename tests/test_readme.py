"""The README and its pages in docs/ stay true: every command they show parses, every flag they name
exists, every file they point to is in the repository, every Python call fits the API's signatures,
every C/C++ example compiles and every link reaches its page and heading.

Commands are checked against the very parsers that would run them (captured at their
``parse_args``, so nothing is run); synopsis lines (``[--flag N]``, ``a|b``, ``IN...``) have their
flags checked one by one, concrete lines are parsed whole."""

from __future__ import annotations

import argparse
import ast
import glob
import inspect
import re
import runpy
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import RESULTS_SHIPPED

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# the README and the documents it sends readers to
_DOC_NAMES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
DOCS = {name: (ROOT / name).read_text(encoding="utf-8") for name in _DOC_NAMES}
# the README with its pages in docs/ (which continue its longer sections): examples are checked wherever they are
ALL_DOCS = "\n".join(DOCS.values())

# outputs of the commands it shows, and data fetched by them: not in a clone
_GENERATED = ("data/", "runs/", "results/refine/cache")


def _fenced(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", text, re.S)


def _prose(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _braces(path: str) -> list[str]:
    """A shell brace expression's paths: ``a{,b}c`` → ``ac``, ``abc``."""
    m = re.search(r"{([^{}]*)}", path)
    if not m:
        return [path]
    return [q for alt in m.group(1).split(",") for q in _braces(path[: m.start()] + alt + path[m.end() :])]


def _command_lines(text: str) -> list[tuple[str, bool]]:
    """Shell lines of the README that run vlmcodec or one of its scripts, each with whether it is
    a whole command: in shell blocks (with their continuations joined, comments dropped; whole)
    and in inline code spans (often a command's name and the flag the prose is about)."""
    lines = []
    for lang, body in _fenced(text):
        if lang not in ("bash", "sh", ""):
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            lines.append((re.split(r"\s#\s|\s{3,}", line.strip())[0], True))
    lines += [(span, False) for span in re.findall(r"`([^`\n]+)`", _prose(text))]
    out = []
    for line, whole in lines:
        line = line.strip().rstrip("&").strip()
        # a span may hold several commands run one after another
        for part in re.split(r"\s(?:&&|;|then)\s", line):
            part = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)+", "", part.strip())
            if re.match(r"(vlmcodec\s+\S|python (scripts/\S+\.py|-m vlmcodec\S*)(\s|$))", part):
                out.append((part, whole))
    return sorted(set(out))


class _Fragment(Exception):
    pass


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def _capture(run) -> argparse.ArgumentParser:
    """The parser ``run()`` builds, taken at its first parse, before anything else is done."""

    def parse(self, args=None, namespace=None):
        raise _Captured(self)

    saved = argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_known_args = parse
    try:
        run()
    except _Captured as c:
        return c.parser
    finally:
        argparse.ArgumentParser.parse_known_args = saved
    raise AssertionError(f"{run} parsed no arguments")


_PARSERS: dict[str, argparse.ArgumentParser] = {}


def _parser_for(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser that reads ``argv`` (a README command, program first) and the arguments it gets."""
    prog = argv[0]
    if prog == "vlmcodec":
        from vlmcodec.bench.cli import PASSTHROUGH

        if len(argv) >= 3 and argv[1] == "bench" and argv[2] in PASSTHROUGH:
            key = f"vlmcodec.bench.{PASSTHROUGH[argv[2]]}"
            rest = argv[3:]
        else:
            from vlmcodec.cli import build_parser

            return _PARSERS.setdefault("vlmcodec", build_parser()), argv[1:]
    elif prog == "python" and argv[1] == "-m":
        key, rest = argv[2], argv[3:]
        if key == "vlmcodec":
            from vlmcodec.cli import build_parser

            return _PARSERS.setdefault("vlmcodec", build_parser()), rest
    else:
        key, rest = argv[1], argv[2:]
    if key not in _PARSERS:
        if key.endswith(".py"):
            path = ROOT / key
            assert path.is_file(), f"README runs {key}, which is not in the repository"
            saved = sys.argv, list(sys.path)
            sys.argv = [str(path)]
            sys.path.insert(0, str(path.parent))
            try:
                _PARSERS[key] = _capture(lambda: runpy.run_path(str(path), run_name="__main__"))
            finally:
                sys.argv, sys.path[:] = saved
        else:
            import importlib

            module = importlib.import_module(key)
            _PARSERS[key] = _capture(lambda: module.main([]))
    return _PARSERS[key], rest


def _subparser(parser: argparse.ArgumentParser, args: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser reached by the subcommand names at the head of ``args``."""
    for word in args:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word.startswith("-"):
            break
        if word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
    return parser


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _is_synopsis(line: str) -> bool:
    """A line showing a command's form (``[--flag N]``, ``a|b``, ``IN...``, a value written as
    its name, ``N`` or ``SECONDS``, a shell variable), not one to run as it stands."""
    return bool(re.search(r"[\[\]|…$]|\.\.\.|(?<![\w/.@-])[A-Z][A-Z0-9_]*(?![\w/.@-])", line))


def _docstring_commands() -> list[tuple[str, str, bool]]:
    """The usage examples in the module docstrings of the scripts and the package (whole lines)."""
    out = []
    for path in sorted([*ROOT.glob("scripts/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("engine/**/*.py")]):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        # an example's continuation lines are joined; a line of prose after it is not one
        for line in re.sub(r"\\\n\s*", " ", doc).splitlines():
            line = re.split(r"\s#\s|\s{3,}", line.strip().removeprefix("$ "))[0]
            line = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)+", "", line)
            if re.match(r"(vlmcodec\s+\S|python (scripts/\S+\.py|-m vlmcodec\S*)(\s|$))", line):
                out.append((str(path.relative_to(ROOT)), line, True))
    return out


def _shell_script_commands() -> list[tuple[str, str, bool]]:
    """The commands the project's shell scripts run (``$variables`` make most of them forms)."""
    out = []
    for path in sorted([*ROOT.glob("scripts/*.sh"), ROOT / ".ci" / "run"]):
        text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
        for line in text.splitlines():
            line = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)+", "", line.strip()).split(" #")[0]
            line = re.sub(r"^python3 ", "python ", line)
            if re.match(r"(vlmcodec\s+\S|python (scripts/\S+\.py|-m vlmcodec\S*)(\s|$))", line):
                out.append((str(path.relative_to(ROOT)), line, True))
    return out


_COMMANDS = _command_lines(ALL_DOCS)
_DOC_COMMANDS = [(doc, line, whole) for doc, text in DOCS.items() for line, whole in _command_lines(text)]
_DOC_COMMANDS += _docstring_commands() + _shell_script_commands()
# scripts/device_run.py X ARGS runs X as python would (on the GPU machine): X is what is checked
_DEVICE_RUN = "python scripts/device_run.py "
_DOC_COMMANDS = [
    (doc, "python " + ("" if line.split()[2].endswith(".py") else "-m ") + line[len(_DEVICE_RUN) :], whole)
    if line.startswith(_DEVICE_RUN)
    else (doc, line, whole)
    for doc, line, whole in _DOC_COMMANDS
    if not line.startswith(_DEVICE_RUN) or re.match(r"(vlmcodec\.|scripts/)", line.split()[2])
]


def test_the_readme_shows_commands():
    assert sum(c.startswith("vlmcodec ") for c, _ in _COMMANDS) > 30
    assert sum(c.startswith("python scripts/") for c, _ in _COMMANDS) > 30
    assert sum(whole and not _is_synopsis(c) for c, whole in _COMMANDS) > 20


@pytest.mark.parametrize(("doc", "line", "whole"), _DOC_COMMANDS, ids=[f"{d}:{c}" for d, c, _ in _DOC_COMMANDS])
def test_each_command_of_the_readme_fits_its_parser(doc, line, whole):
    words = line.replace("[", " [ ").replace("]", " ] ").split() if _is_synopsis(line) else shlex.split(line)
    parser, args = _parser_for(words)
    # a command named by its subcommands alone, with a flag written as a|b or in brackets
    names = [w for w in args if not w.startswith("-") and w not in "[]"]
    target = _subparser(parser, names)
    known = _options(target)
    flags = [w.split("=")[0] for w in args if re.fullmatch(r"--?[A-Za-z][\w-]*(=\S*)?", w)]
    unknown = [f for f in flags if f not in known]
    assert not unknown, f"{doc}: `{line}` names {unknown}, which {target.prog} does not take"
    if _is_synopsis(line):
        return

    def refuse(message):
        # an inline span naming a command and the flag the prose is about, not all it needs
        if not whole and re.search(r"arguments are required|expected one argument", message):
            raise _Fragment
        raise AssertionError(f"{doc}: `{line}` does not parse: {message}")

    saved = {p: p.error for p in _all_parsers(parser)}
    for p in saved:
        p.error = refuse
    try:
        parser.parse_args(args)
    except SystemExit as e:  # --help, --version
        assert e.code in (0, None), line
    except _Fragment:
        pass
    finally:
        for p, error in saved.items():
            p.error = error


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                yield from _all_parsers(sub)


@pytest.mark.parametrize("doc", DOCS)
def test_every_file_the_readme_points_to_is_in_the_repository(doc):
    roots = "scripts|configs|docs|engine|kernels|export|bench|tests|results|assets|\\.ci"
    paths = set(re.findall(rf"(?<![\w/.-])((?:{roots})/(?:[\w./*-]|{{[\w.,-]*}})*[\w*])", DOCS[doc]))
    assert len(paths) > 10
    missing = [
        p
        for p in sorted(paths)
        if not p.startswith(_GENERATED)
        and not re.search(r"NAME|plusN|stageN|REV", p)
        and (RESULTS_SHIPPED or not p.startswith("results/"))  # (the sdist leaves results/ out)
        and not all(glob.glob(str(ROOT / q)) for q in _braces(p))
    ]
    assert not missing, f"{doc} points to files that are not there: {missing}"


def test_every_config_and_set_key_the_readme_uses_exists():
    from vlmcodec.training.trainer import TrainConfig

    fields = set(TrainConfig.__dataclass_fields__)
    text = "\n".join(DOCS.values())
    keys = set(re.findall(r"--set ([a-z]\w*)=", text))
    assert len(keys) > 3, "the README shows no --set"
    assert keys <= fields, f"the docs set training keys TrainConfig does not have: {sorted(keys - fields)}"
    for name in set(re.findall(r"--config (configs/[\w.]+)", text)):
        assert (ROOT / name).is_file(), name


def _api_types() -> dict:
    import vlmcodec
    from vlmcodec.runtime import AsyncRemoteCodec, Engine, RemoteCodec

    # what the README's examples name their objects
    return {
        "codec": vlmcodec.Codec,
        "codecs": vlmcodec.CodecSet,
        "engine": Engine,
        "remote": RemoteCodec,
        "AsyncRemoteCodec": AsyncRemoteCodec,
    }


def _resolve(node: ast.expr, names: dict):
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        if owner is None:
            return None
        assert hasattr(owner, node.attr), f"README uses {ast.unparse(node)}, which does not exist"
        return getattr(owner, node.attr)
    if isinstance(node, ast.Call):  # RemoteCodec(url).encode
        made = _resolve(node.func, names)
        return made if inspect.isclass(made) else None
    return None


def test_every_python_call_in_the_readme_fits_the_api():
    import vlmcodec

    blocks = [body for lang, body in _fenced(ALL_DOCS) if lang == "python"]
    assert len(blocks) >= 4
    calls = 0
    for body in blocks:
        tree = ast.parse(body)
        names = {"vlmcodec": vlmcodec, **_api_types()}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                import importlib

                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"README imports {alias.name} from {node.module}"
                    names[alias.asname or alias.name] = getattr(module, alias.name)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = _resolve(node.func, names)
            if func is None or not callable(func):
                continue
            target = func.__init__ if inspect.isclass(func) else func
            params = inspect.signature(target).parameters
            kinds = {p.kind for p in params.values()}
            text = ast.unparse(node)
            if inspect.Parameter.VAR_KEYWORD not in kinds:
                for kw in node.keywords:
                    assert kw.arg in params, f"README: `{text}`: {func.__qualname__} takes no {kw.arg}="
            if inspect.Parameter.VAR_POSITIONAL not in kinds:
                positional = [
                    p
                    for name, p in params.items()
                    if name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                ]
                assert len(node.args) <= len(positional), f"README: `{text}`: too many arguments"
            calls += 1
    assert calls > 30


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS)
def test_every_link_within_the_docs_reaches_its_heading(doc):
    text = DOCS[doc]
    anchors: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(text), re.M):
        slug = _slug(heading)
        n = anchors.get(slug, 0)
        anchors[slug] = n + 1
        if n:
            anchors[f"{slug}-{n}"] = 1
    links = re.findall(r"\]\(#([^)\s]+)\)", text)
    assert doc != "README.md" or len(links) > 10
    broken = sorted({link for link in links if link not in anchors})
    assert not broken, f"{doc} links to headings that are not there: {broken}"
    # links to another document (relative to this one's folder), and to a heading there
    for target, _, anchor in re.findall(r"\]\(([\w./-]+\.md)(#([^)\s]+))?\)", text):
        name = (ROOT / doc).parent.joinpath(target).resolve().relative_to(ROOT).as_posix()
        other = DOCS.get(name)
        assert other is not None, f"{doc} links to {target}, not among the docs"
        if anchor:
            assert anchor in {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", _prose(other), re.M)}, (doc, target, anchor)


# Quoted capitalised phrases of the docs that are not the names of sections: an error message and
# an error's type, table columns and a term
_QUOTED_NOT_SECTIONS = {"N of M files failed", "RateLimited", "Lite0 top-1", "Unfit", "RDO quantization"}


def _titles(text: str) -> set[str]:
    """A document's headings and the bold titles of its paragraphs and bullets."""
    return ({h.strip() for h in re.findall(r"^#{1,6} (.+)$", _prose(text), re.M)}
            | {t.strip() for t in re.findall(r"\*\*([^*\n]+?)\*\*", text)})


@pytest.mark.parametrize("doc", DOCS)
def test_every_section_named_in_quotes_exists(doc):
    """The docs send readers on by a section's name in quotes ("Large images", "Default model"):
    each such name starts a heading or a paragraph's bold title in the README or a page of docs/
    (their pages say where to look), so a section renamed or moved away is caught."""
    titles = set().union(*(_titles(text) for text in DOCS.values()))
    prose = re.sub(r"`[^`\n]*`", "", _prose(DOCS[doc]))
    quoted = set(re.findall(r'"([A-Z][^"\n]{2,60})"', prose)) - _QUOTED_NOT_SECTIONS
    assert doc != "README.md" or len(quoted) > 8
    lost = sorted(q for q in quoted if not any(t.startswith(q.rstrip(".")) for t in titles))
    assert not lost, f"{doc} names sections that are nowhere in the docs: {lost}"


# What each C or C++ example of the README takes from the code around it (keyed by a line of the
# example): the examples are fragments, compiled inside a function with these declarations
_C_CONTEXT = {
    "vlmc_decoder_open(": "const uint8_t *data = 0; size_t size = 0;",
    "const vlmc::Decoder dec(": "std::vector<uint8_t> bytes;",
    "vlmc_decoder_write_stream(": "const vlmc_decoder *dec = 0; const float *y = 0, *z = 0; size_t y_count = 0, "
                                 "z_count = 0; uint32_t width = 64, height = 64;",
    "vlmc_decoder_encode_image(": "const vlmc_decoder *dec = 0; const uint8_t *rgb = 0; uint32_t width = 64, "
                                 "height = 64; double quality;",
    "vlmc_decoder_encode_pixels(": "const vlmc_decoder *dec = 0; const uint8_t *bgra = 0; uint32_t width = 64, "
                                  "height = 64; int32_t pitch = 256; uint8_t *stream; size_t size;",
}


@pytest.mark.parametrize("index", range(sum(lang in ("c", "cpp") for lang, _ in _fenced(ALL_DOCS))))
def test_each_c_and_cpp_example_of_the_readme_compiles(index, tmp_path):
    """Against the installed headers, as a fragment inside a function: every function, type and
    constant it names exists and takes the arguments it is given (warnings are errors)."""
    import shutil
    import subprocess

    lang, body = [(lang, body) for lang, body in _fenced(ALL_DOCS) if lang in ("c", "cpp")][index]
    compiler = shutil.which("g++" if lang == "cpp" else "gcc") or shutil.which("c++" if lang == "cpp" else "cc")
    if compiler is None:
        pytest.skip("no C/C++ compiler on this machine")
    context = [text for key, text in _C_CONTEXT.items() if key in body]
    assert len(context) == 1, f"README's {lang} example {index} needs its context in _C_CONTEXT:\n{body}"
    includes = [line for line in body.splitlines() if line.startswith("#include")]
    code = "\n".join(line for line in body.splitlines() if not line.startswith("#include"))
    if lang == "cpp":
        head = "#include <vector>\n#include <cstdint>\n" + "\n".join(includes or ["#include <vlmc_decoder.hpp>"])
        std = ["-std=c++17"]
    else:
        head = "#include <stdint.h>\n#include <stdlib.h>\n#include <vlmc_decoder.h>\nvoid die(const char *why);"
        std = ["-std=c11"]
    source = tmp_path / f"example.{lang}"
    source.write_text(f"{head}\nvoid example(void) {{\n{context[0]}\n{code}\n}}\n")
    run = subprocess.run([compiler, *std, "-fsyntax-only", "-Wall", "-Werror", "-Wno-unused-variable",
                          "-Wno-unused-but-set-variable", "-Wno-uninitialized", "-Wno-maybe-uninitialized",
                          f"-I{ROOT / 'kernels' / 'decoder'}", str(source)], capture_output=True, text=True)
    assert run.returncode == 0, f"README's {lang} example {index} does not compile:\n{run.stderr}\n{source.read_text()}"


def test_each_toml_example_of_the_readme_is_a_valid_serve_config(tmp_path):
    """The README's TOML is ``vlmcodec serve --config``'s: each key one of serve's options, each
    value one its flag takes."""
    from vlmcodec.cli import apply_serve_config, build_parser

    blocks = [body for lang, body in _fenced(ALL_DOCS) if lang == "toml"]
    assert blocks
    for i, body in enumerate(blocks):
        path = tmp_path / f"serve{i}.toml"
        path.write_text(body)
        parser = build_parser()
        apply_serve_config(parser.serve_parser, ["--config", str(path)])  # ConfigError names a bad key
        args = parser.parse_args(["serve", "--config", str(path)])
        for key, value in tomllib.loads(body).items():
            assert getattr(args, key.replace("-", "_")) not in (None, False), key


def _resolves(dotted: str) -> bool:
    """Whether ``vlmcodec.a.b.Name`` names something: its longest importable module, then attributes."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def test_every_dotted_vlmcodec_name_in_the_docs_and_the_cli_help_exists():
    """A name such as ``vlmcodec.training.trainer.TrainConfig`` in the docs or in a --help text
    (``vlmcodec train --help`` named ``vlmcodec.training.TrainConfig``, which is not there)."""
    texts = {**DOCS, **{str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
                      for p in sorted((ROOT / "engine" / "cli").glob("*.py"))}}
    names = {(doc, m) for doc, text in texts.items() for m in re.findall(r"\bvlmcodec(?:\.[A-Za-z_]\w*)+", text)}
    assert len(names) > 20
    missing = sorted(f"{doc}: {name}" for doc, name in names if not _resolves(name))
    assert not missing, missing
