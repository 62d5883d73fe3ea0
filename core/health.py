"""Health checks for containers: the API's /readyz and the workers' heartbeat files."""

from __future__ import annotations

import time
import urllib.request

from core.settings import Settings

HEARTBEAT_FILE = "heartbeat"
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_STALE_S = 30.0


def check(settings: Settings, target: str, role: str | None = None) -> tuple[bool, str]:
    if target == "api":
        url = f"http://127.0.0.1:{settings.api.port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=4) as resp:
                return resp.status == 200, f"{url}: {resp.status}"
        except OSError as e:
            return False, f"{url}: {e}"
    root = settings.workers.data_dir
    files = [root / role / HEARTBEAT_FILE] if role else sorted(root.glob(f"*/{HEARTBEAT_FILE}"))
    fresh = [f for f in files if f.exists() and time.time() - f.stat().st_mtime < HEARTBEAT_STALE_S]
    if not fresh:
        return False, f"no worker heartbeat newer than {HEARTBEAT_STALE_S:.0f}s under {root}"
    return True, "fresh heartbeats: " + ", ".join(str(f.parent.name) for f in fresh)
