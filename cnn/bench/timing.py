"""Timing: warm-ups, then repetitions in rounds that alternate the backends, and their
statistics; the settings of a full and a ``--quick`` run (``alone_rounds``, ``alone_budget``:
the alone mode's rounds of children and seconds of timed calls per child, see
:mod:`cnn.bench.alone`)."""

import math
import time

import numpy as np

__all__ = ["FULL", "QUICK", "stats", "time_backends"]

FULL = {"budget": 1.2, "min_reps": 7, "slow_min_reps": 3, "warmups": 2, "rounds": 3,
        "reference_limit": 2.0, "memory_steps": 50, "breakdown_reps": 15,
        "alone_rounds": 3, "alone_budget": 0.6}
QUICK = {"budget": 0.05, "min_reps": 3, "slow_min_reps": 2, "warmups": 2, "rounds": 1,
         "reference_limit": 0.3, "memory_steps": 10, "breakdown_reps": 3,
         "alone_rounds": 1, "alone_budget": 0.03}

# A repetition slower than this is "slow": it needs only slow_min_reps repetitions.
_SLOW_REP = 0.25
# Pause between two backends, so that one library's spinning worker threads (OpenMP, OpenBLAS)
# have gone to sleep before the other's timing starts.
_SWITCH_PAUSE = 0.05


def stats(samples):
    """Median, min, max, quartiles (seconds) and count of ``samples``."""
    s = np.sort(np.asarray(samples, dtype=np.float64))
    return {"median_s": float(np.median(s)), "min_s": float(s[0]), "max_s": float(s[-1]),
            "p25_s": float(np.percentile(s, 25)), "p75_s": float(np.percentile(s, 75)),
            "reps": int(s.size)}


def time_backends(runs, cfg, estimates):
    """Time each backend's ``run`` in alternating rounds.

    ``runs``: backend -> run(); ``estimates``: backend -> seconds of one call (from the check).
    Returns backend -> list of seconds.
    """
    clock = time.perf_counter
    samples = {b: [] for b in runs}
    for run in runs.values():  # warm-ups (the check call was one more)
        for _ in range(cfg["warmups"]):
            run()
        time.sleep(_SWITCH_PAUSE)
    rounds = cfg["rounds"]
    for _r in range(rounds):
        for b, run in runs.items():
            slow = estimates.get(b, 0.0) > _SLOW_REP
            min_reps = cfg["slow_min_reps"] if slow else cfg["min_reps"]
            want = max(1, math.ceil(min_reps / rounds))
            budget = cfg["budget"] / rounds
            start = clock()
            done = 0
            while done < want or (clock() - start < budget and done < 5000):
                t0 = clock()
                run()
                samples[b].append(clock() - t0)
                done += 1
            time.sleep(_SWITCH_PAUSE)
    return samples
