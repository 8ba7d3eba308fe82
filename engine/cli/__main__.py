"""``python -m vlmcodec.cli``: the ``vlmcodec`` command."""

from . import main

raise SystemExit(main())
