"""Demo seeder: a handful of users and prompts, sent through the public HTTP API.

Going through the API (not the database) means the demo exercises the same path a
client does: prompt moderation, the outbox, the broker and every worker. It is safe
to run twice: users that exist are left alone.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

DEMO: dict[str, tuple[str, list[str]]] = {
    "maya_makes": ("Maya", ["a cat dancing on the beach at sunset", "a red fox running through a snowy forest"]),
    "theo_films": ("Theo", ["a rocket flying through space at night", "a boat floating on the ocean at sunrise"]),
    "priya_p": ("Priya", ["a robot dancing in the city at night", "a pizza spinning in the desert"]),
    "sam_draws": ("Sam", ["a bird flying over the mountains in the morning", "a fish swimming underwater"]),
    "lena_k": ("Lena", ["a dog jumping on the beach", "flowers floating in space"]),
}


# Demo accounts only exist on a development stack; the password is in the README.
DEMO_PASSWORD = "clipstream-demo"


def wait_for_api(base_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"API at {base_url} did not answer within {timeout:.0f}s")


def seed(base_url: str, tokens_path: Path, prompts_per_user: int = 2) -> dict[str, str]:
    """Create demo users and submit their prompts; returns handle → token for new users."""
    wait_for_api(base_url)
    tokens: dict[str, str] = json.loads(tokens_path.read_text()) if tokens_path.exists() else {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for handle, (name, prompts) in DEMO.items():
            if client.get(f"/v1/users/{handle}").status_code == 200:
                log.info("demo user @%s exists; not seeding again", handle)
                continue
            resp = client.post(
                "/v1/auth/signup", json={"handle": handle, "display_name": name, "password": DEMO_PASSWORD}
            )
            resp.raise_for_status()
            token = resp.json()["token"]
            tokens[handle] = token
            for i, text in enumerate(prompts[:prompts_per_user]):
                r = client.post(
                    "/v1/prompts",
                    json={"text": text},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"seed-{handle}-{i}"},
                )
                r.raise_for_status()
                log.info("@%s submitted %r → %s", handle, text, r.json()["status"])
    tokens_path.parent.mkdir(parents=True, exist_ok=True)
    tokens_path.write_text(json.dumps(tokens, indent=2))
    return tokens
