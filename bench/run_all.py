"""Run every benchmark, one after the other: ``python bench/run_all.py``.

Each prints µs per operation and spans/s, instrumented vs not, in one run: the crash-safe JSONL
record per span, one openai call (plain and a 20-chunk stream), and one LangGraph ReAct turn.
Run it on a quiet machine: the numbers are CPU time, but a loaded machine still skews them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ("bench_jsonl.py", "bench_openai.py", "bench_langgraph.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    status = 0
    for name in BENCHES:
        print(f"\n=== {name} ===", flush=True)
        status |= subprocess.call([sys.executable, str(here / name), *sys.argv[1:]])
    return status


if __name__ == "__main__":
    raise SystemExit(main())
