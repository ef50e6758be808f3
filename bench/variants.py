"""`falrelay` with a proposed change applied in-process, to measure a change before anyone
makes it in app/: `python -m bench.variants NAME[,NAME...] api --host ... --port ...`.

Each variant is one proposed lever, patched as narrowly as possible by a function in
VARIANTS, so that `--experiments` can measure it beside falrelay as it is. A lever leaves this
file once app/ has it: then falrelay as it is already measures it, and its patch would no
longer apply. None is pending now; the experiments that remain change settings only.

To propose one: write a function that patches app/ at import time (before `app.cli` is
imported, as the routers read their dependencies when declared), register it below under a
short name, and name it in the EXPERIMENTS of the benchmarks it should move
(bench/benchmarks/*.py). The end-to-end benchmark measures all of them at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

# name -> the patch that applies it; in the order they are applied.
VARIANTS: dict[str, Callable[[], None]] = {}


def main(argv: list[str]) -> None:
    chosen = [v for v in argv[0].split(",") if v]
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    for name, apply in VARIANTS.items():
        if name in chosen:
            apply()
    from app.cli import main as falrelay

    falrelay(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
