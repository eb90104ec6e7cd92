"""Step and whole-fuse latency for every available backend against PyTorch eager autograd.

    python benchmarks/bench_latency.py [--sizes 256,512] [--layers relu1_1,relu1_2] [--repeats 5]

Same as `semfuse-rt bench`; reports go to benchmarks/out/ (bench.json, bench.md, bench.png).
Copy the markdown table with the command, machine and date into benchmarks/RESULTS.md.
"""
import sys
from pathlib import Path

from semfuse_rt.engine.cli import main

if __name__ == "__main__":
    out = ["--out", str(Path(__file__).parent / "out")] if "--out" not in sys.argv else []
    sys.argv = ["semfuse-rt", "bench", *sys.argv[1:], *out]
    main()
