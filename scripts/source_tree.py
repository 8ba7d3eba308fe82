"""Import ``vlmcodec`` straight from a source tree, without installing it.

For a bare machine that cannot build the package (the GPU device machine: torch and Triton, no
internet, no build tools promised). The installed layout maps ``engine/`` to ``vlmcodec``,
``kernels/`` to ``vlmcodec.kernels``, ``export/`` and ``bench/`` likewise; this registers the
same mapping. Everything except the C++ entropy coder works: training, the models, the Triton
kernels (the codec's encode/decode raise ImportError for the missing extension).

    import source_tree; source_tree.activate()        # then: import vlmcodec.training.trainer
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PARTS = (("vlmcodec", "engine"), ("vlmcodec.kernels", "kernels"), ("vlmcodec.export", "export"),
          ("vlmcodec.bench", "bench"))


def activate(root: Path = ROOT) -> None:
    """Make ``import vlmcodec...`` load from ``root`` (a no-op if it already does)."""
    if "vlmcodec" in sys.modules:
        return
    modules = []
    for name, folder in _PARTS:
        init = root / folder / "__init__.py"
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        modules.append((spec, module))
    sys.modules["vlmcodec"].kernels = sys.modules["vlmcodec.kernels"]
    for spec, module in modules:
        spec.loader.exec_module(module)
