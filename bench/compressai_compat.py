"""Import CompressAI 1.2.8 for reference tests without its heavy optional dependencies.

``compressai/__init__`` pulls torchvision and torch_geometric (point-cloud code we never
touch); we register the package without running its ``__init__`` and stub those modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from vlmcodec.errors import BackendUnavailableError

_STUBS = ("torch_geometric", "torchvision", "pointops", "torch_cluster", "pytorch_msssim")


class _Anything(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})


class CompressAIUnavailable(BackendUnavailableError, ImportError):
    """CompressAI (a benchmark-only package) is not installed or cannot be imported: the CLI's
    one-line error with the pip command; an ImportError too, as it was."""


_INSTALL = "pip install --no-deps compressai==1.2.8 einops"


class _StubFinder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _STUBS:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _Anything(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def import_compressai(submodule: str):
    """Return ``compressai.<submodule>``, or raise ``CompressAIUnavailable`` (a BackendUnavailableError
    and an ImportError) if CompressAI is not installed or one of its imports is missing.

    The stubs exist only while CompressAI's modules are imported: left in place, they would make
    other libraries (transformers checks for torchvision) believe the stubbed packages exist.
    """
    finder = _StubFinder()
    sys.meta_path.append(finder)
    try:
        return _import(submodule)
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] in _STUBS and isinstance(sys.modules[n], _Anything)]:
            del sys.modules[name]


def _import(submodule: str):
    try:
        return _import_unchecked(submodule)
    except CompressAIUnavailable:
        raise
    except ImportError as e:  # (einops, or a module of CompressAI's own, missing)
        raise CompressAIUnavailable(f"compressai cannot be imported ({e}): {_INSTALL}") from e


def _import_unchecked(submodule: str):
    if sys.modules.get("compressai") is not None:  # (None: made unimportable)
        return importlib.import_module(f"compressai.{submodule}")
    spec = importlib.util.find_spec("compressai")
    if spec is None or not spec.submodule_search_locations:
        raise CompressAIUnavailable(f"compressai is not installed: {_INSTALL}")
    pkg = types.ModuleType("compressai")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    # what compressai/__init__ would define (the ans coder is the only one used)
    setattr(pkg, "get_entropy_coder", lambda: "ans")
    setattr(pkg, "available_entropy_coders", lambda: ["ans"])
    setattr(pkg, "set_entropy_coder", lambda name: None)
    sys.modules["compressai"] = pkg
    return importlib.import_module(f"compressai.{submodule}")
