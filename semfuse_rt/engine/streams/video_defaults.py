"""Defaults of the video fuse (engine/streams/video_fusion.py) that `fuse-video --help` shows: here,
apart from that module, which imports torch."""
from __future__ import annotations

# benchmarks/bench_video.py, 60 frames of pan + zoom over TNO Octec at 640x512, Q^AB/F
# against the cold `fast` fuse of each frame (mean / worst): 1 step -0.0012 / -0.0023,
# 2 steps -0.0008 / -0.0016, 3 steps -0.0005 / -0.0013. Two keep the worst frame well inside
# 0.005 where motion is faster than there, for one more gradient evaluation than one.
DEFAULT_WARM_STEPS = 2
