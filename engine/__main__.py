"""``python -m vlmcodec``: the ``vlmcodec`` command (for environments without the script on PATH)."""

import sys

from vlmcodec.cli import main

if __name__ == "__main__":
    sys.exit(main())
