"""Run a module as ``python -m`` would, with ``vlmcodec`` importable on the bare GPU device machine:
the installed package if it was built there (scripts/device_setup.sh), else the source tree.

    python scripts/device_run.py pytest -m gpu -q tests/test_kernel_gdn.py tests/test_kernel_quantize.py
    python scripts/device_run.py vlmcodec.bench.kernels --help
    python scripts/device_run.py scripts/hs_device_bench.py --device cpu-im2col
"""

import runpy
import sys
from pathlib import Path

try:
    from vlmcodec.kernels.rans import CdfTable  # noqa: F401  (installed and built)
    from vlmcodec.models import MeanScaleHyperprior  # noqa: F401
except ImportError:
    for name in [m for m in sys.modules if m == "vlmcodec" or m.startswith("vlmcodec.")]:
        del sys.modules[name]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import source_tree

    source_tree.activate()
    print("device_run: vlmcodec from the source tree (no C++ extension: encode/decode unavailable)", file=sys.stderr)

if len(sys.argv) < 2:
    raise SystemExit("usage: device_run.py MODULE [ARGS...]")
sys.argv = sys.argv[1:]
if sys.argv[0].endswith(".py"):  # a script path, e.g. scripts/hs_device_bench.py
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
