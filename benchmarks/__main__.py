"""``python -m benchmarks``: see :func:`benchmarks.harness.main`."""

from __future__ import annotations

import sys

from .kernel import run_on_native_kernel

if __name__ == "__main__":
    run_on_native_kernel("benchmarks")
    from .harness import main

    sys.exit(main())
