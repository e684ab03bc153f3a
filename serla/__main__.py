"""``python -m serla`` and the ``serla`` console script: see :mod:`serla._cli`."""

from __future__ import annotations

import sys

from serla._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
