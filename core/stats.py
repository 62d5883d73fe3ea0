"""Small statistics helpers (benchmarks, analytics) with no numpy dependency."""

from __future__ import annotations


def pct(values: list[float], p: float) -> float:
    """The p-th percentile by linear interpolation (no numpy needed)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB, from /proc (Linux); NaN if unknown."""
    from pathlib import Path

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
