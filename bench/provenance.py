"""Provenance: signing and verifying a clip's C2PA manifest, per clip.

Baseline, measured in the same run: sha256 of the same file (what binding a file to
a record costs at the least). Usage: .venv/bin/python bench/provenance.py [--n 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.stats import pct
from generation import ProceduralRenderer, RenderRequest
from generation.encoding import sha256_file
from generation.provenance import ClipClaim, load_credentials, sign_video, verify_video


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    creds = load_credentials(tmp / "keys")
    clip = ProceduralRenderer().generate(
        [RenderRequest("p", "c", "a cat dancing on the beach", 1, "bench")], [tmp / "c"]
    )[0]
    original = tmp / "original.mp4"
    shutil.copy(clip.video_path, original)
    size_kb = original.stat().st_size / 1024
    claim = ClipClaim("c", "p", "u", "bench", "procedural", "procedural-2", ClipClaim.hash_prompt("a cat"))
    copies = [tmp / f"copy{i}.mp4" for i in range(args.n)]
    for c in copies:
        shutil.copy(original, c)
    hashing = timed(lambda i: sha256_file(copies[i]), args.n)
    signing = timed(lambda i: sign_video(copies[i], claim, creds), args.n)
    data = copies[0].read_bytes()
    verifying = timed(lambda i: verify_video(data, creds.trust_anchors_pem), args.n)
    assert verify_video(data, creds.trust_anchors_pem).verdict == "made_here"
    base = pct(hashing, 50)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"one 288x512 3 s clip ({size_kb:.0f} KB), {args.n} runs each\n")
    print(f"{'operation':<22} {'p50 ms':>8} {'p95 ms':>8} {'vs sha256':>10}")
    for name, xs in (("sha256 (baseline)", hashing), ("sign (C2PA, ES256)", signing), ("verify (C2PA)", verifying)):
        print(f"{name:<22} {pct(xs, 50) * 1000:>8.2f} {pct(xs, 95) * 1000:>8.2f} {pct(xs, 50) / base:>9.1f}x")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
