"""`python -m semfuse_rt ...`: the semfuse-rt command line, for environments without the
console script on PATH."""
from semfuse_rt.engine.cli import main

if __name__ == "__main__":
    main()
