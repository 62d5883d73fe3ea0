"""ClipIndex: nearest published clips by CLIP embedding, with removals that take effect at once.

The index holds the normalised clip embeddings that ``clips.published`` carries and
answers "the k clips closest to this vector" (inner product = cosine). It is fed from
the log, so every API replica and the ranking worker can hold their own copy:

* **index type by size**: exact search (``IndexFlatIP``) below ``exact_below`` clips,
  an inverted file above it (``IndexIVFFlat``, ``4·√n`` lists trained on the clips
  themselves, ``nprobe`` lists searched; ``bench/faiss_index.py`` measures recall@10
  against exact search: HNSW, tried first, reached only 0.64 at 1M clips where IVF
  reaches 1.0). The switch happens when the index crosses the threshold, and an IVF
  index that has grown past ``regrow`` times the size it was trained for is retrained
  by :meth:`compact`;
* **removals** (takedowns, deletions, revoked cameos) are immediate: both index types
  delete the row (``remove_ids``), so no later query can return it;
* **upserts**: a clip published again (a new embedding after a re-scan) replaces its
  old vector;
* **snapshots** (:meth:`save` / :meth:`load`) store the index with the log position it
  reflects, so a restarted process loads the snapshot and catches up from that position
  instead of replaying the whole topic.

All methods are thread-safe: a consumer thread may add while request threads search.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ClipstreamError

EXACT_BELOW = 50_000
IVF_NPROBE = 32
IVF_REGROW = 4.0
SNAPSHOT_VERSION = 2


def swap_into_place(tmp: Path, folder: Path) -> None:
    """Replace ``folder`` by the freshly written ``tmp`` (same parent) so that a crash at
    any point leaves either the old or the new snapshot whole."""
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


class ClipIndexError(ClipstreamError):
    """A vector or snapshot the index cannot take."""


@dataclass(frozen=True)
class Hit:
    clip_id: str
    score: float


class ClipIndex:
    """Clip id (a string) → normalised vector of ``dim`` floats, searchable by cosine."""

    def __init__(
        self,
        dim: int,
        *,
        exact_below: int = EXACT_BELOW,
        nprobe: int = IVF_NPROBE,
        regrow: float = IVF_REGROW,
        model: str = "",
    ) -> None:
        if dim <= 0:
            raise ClipIndexError(f"dimension must be positive, not {dim}")
        self.dim = dim
        self.model = model
        self.exact_below = exact_below
        self.nprobe = nprobe
        self.regrow = regrow
        self._lock = threading.RLock()
        self._key_of: dict[str, int] = {}  # clip id → faiss id
        self._clip_of: dict[int, str] = {}  # faiss id → clip id
        self._trained_for = 0  # clips the IVF lists were trained on
        self._next = 0
        # Our own copy of every live vector, by faiss id: rebuilds need no reconstruct().
        # Rows [0, _used) of a buffer grown by doubling: adding one clip costs O(1), not a copy.
        self._vectors = np.zeros((0, dim), np.float32)
        self._used = 0
        self._row_of: dict[int, int] = {}
        self._index = self._new_index("flat", self._vectors)
        self._kind = "flat"
        #: The log position this index reflects ({"topic:partition": next offset}).
        self.position: dict[str, int] = {}

    # ------------------------------------------------------------------ building blocks
    def _new_index(self, kind: str, vectors: np.ndarray) -> Any:
        """An empty index of ``kind``; an IVF one trained on (a sample of) ``vectors``."""
        import faiss

        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        nlist = max(1, min(int(4 * np.sqrt(len(vectors))), len(vectors) // 39))  # faiss: ≥ 39 points a list
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors if len(vectors) <= 64 * nlist else vectors[rng.choice(len(vectors), 64 * nlist, replace=False)]
        ivf.train(np.ascontiguousarray(sample))
        ivf.nprobe = min(self.nprobe, nlist)
        self._trained_for = len(vectors)
        return ivf

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(vectors, np.float32).reshape(-1, self.dim))
        if not np.isfinite(x).all():
            raise ClipIndexError("embedding has NaN or infinite values")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms < 1e-6).any():
            raise ClipIndexError("embedding is all zeros")
        return x / norms

    @property
    def kind(self) -> str:
        """``flat`` (exact) or ``ivf``."""
        return self._kind

    def __len__(self) -> int:
        with self._lock:
            return len(self._key_of)

    def __contains__(self, clip_id: object) -> bool:
        with self._lock:
            return clip_id in self._key_of

    def vector(self, clip_id: str) -> np.ndarray | None:
        """The stored (normalised) vector of a live clip, or None."""
        with self._lock:
            key = self._key_of.get(clip_id)
            return None if key is None else self._vectors[self._row_of[key]].copy()

    # ------------------------------------------------------------------ writes
    def vectors(self, clip_ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``clip_ids`` as one (n, dim) matrix, in one gather;
        zero rows for clips not in the index."""
        with self._lock:
            rows = [self._row_of.get(self._key_of.get(cid, -1), -1) for cid in clip_ids]
            if not rows or not len(self._vectors):
                return np.zeros((len(rows), self.dim), np.float32)
            out = self._vectors[np.maximum(rows, 0)]
        missing = [i for i, r in enumerate(rows) if r < 0]
        if missing:
            out[missing] = 0.0
        return out

    def add(self, clip_id: str, vector: Sequence[float] | np.ndarray) -> None:
        self.add_many([clip_id], np.asarray(vector, np.float32).reshape(1, -1))

    def add_many(self, clip_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace clips (an id seen again gets its new vector)."""
        x = self._check(vectors)
        if len(x) != len(clip_ids):
            raise ClipIndexError(f"{len(clip_ids)} ids for {len(x)} vectors")
        with self._lock:
            # The last vector of an id repeated within one call wins.
            last = {cid: i for i, cid in enumerate(clip_ids)}
            for cid in last:
                if cid in self._key_of:
                    self._remove_locked(cid)
            rows = sorted(last.values())
            keys = np.arange(self._next, self._next + len(rows), dtype=np.int64)
            self._next += len(rows)
            start = self._used
            need = start + len(rows)
            if need > len(self._vectors):
                grown = np.zeros((max(need, 2 * len(self._vectors), 1024), self.dim), np.float32)
                grown[:start] = self._vectors[:start]
                self._vectors = grown
            self._vectors[start:need] = x[rows]
            self._used = need
            for offset, (key, i) in enumerate(zip(keys.tolist(), rows, strict=True)):
                self._key_of[clip_ids[i]] = key
                self._clip_of[key] = clip_ids[i]
                self._row_of[key] = start + offset
            self._index.add_with_ids(x[rows], keys)
            if self._kind == "flat" and len(self._key_of) >= self.exact_below:
                self._rebuild_locked()

    def remove(self, clip_id: str) -> bool:
        """Take a clip out of every later query; False if it was not in the index."""
        with self._lock:
            if clip_id not in self._key_of:
                return False
            self._remove_locked(clip_id)
            return True

    def _remove_locked(self, clip_id: str) -> None:
        key = self._key_of.pop(clip_id)
        self._row_of.pop(key, None)  # the row stays in _vectors until a rebuild
        self._index.remove_ids(np.array([key], np.int64))
        self._clip_of.pop(key, None)

    def needs_compaction(self) -> bool:
        """True when removed rows hold more memory than live ones, or an IVF index has
        outgrown the size its lists were trained for (searches get slower, not wrong)."""
        with self._lock:
            live = max(1, len(self._key_of))
            stale = self._used - live >= live and self._used >= 1000
            outgrown = self._kind == "ivf" and live > self.regrow * max(1, self._trained_for)
            return stale or outgrown

    def compact(self) -> None:
        """Rebuild without stale rows, choosing the index type by size (and retraining IVF)."""
        with self._lock:
            self._rebuild_locked()

    def _rebuild_locked(self) -> None:
        kind = "flat" if len(self._key_of) < self.exact_below else "ivf"
        keys = np.array(sorted(self._row_of), np.int64)
        rows = np.array([self._row_of[k] for k in keys.tolist()], np.int64)
        vectors = np.ascontiguousarray(self._vectors[rows] if len(rows) else np.zeros((0, self.dim), np.float32))
        index = self._new_index(kind, vectors)
        if len(keys):
            index.add_with_ids(vectors, keys)
        self._index, self._kind = index, kind
        self._vectors = vectors
        self._used = len(vectors)
        self._row_of = {k: i for i, k in enumerate(keys.tolist())}
        self._clip_of = {k: self._clip_of[k] for k in keys.tolist()}

    # ------------------------------------------------------------------ queries
    def search(self, query: Sequence[float] | np.ndarray, k: int = 10, exclude: Iterable[str] = ()) -> list[Hit]:
        """The ``k`` live clips closest to ``query``, best first, leaving out ``exclude``."""
        return self.search_many(np.asarray(query, np.float32).reshape(1, -1), k, exclude)[0]

    def search_many(self, queries: np.ndarray, k: int = 10, exclude: Iterable[str] = ()) -> list[list[Hit]]:
        if k <= 0:
            return [[] for _ in range(len(np.atleast_2d(queries)))]
        q = self._check(queries)
        skip = set(exclude)
        with self._lock:
            live = len(self._key_of)
            if live == 0:
                return [[] for _ in range(len(q))]
            # Most of a heavy user's seen clips are nowhere near the top: start at 2k
            # and widen only when the exclusions leave fewer than k.
            fetch = min(k + min(len(skip), k), live)
            while True:
                scores, keys = self._index.search(q, fetch)
                out = [self._collect(s, ks, k, skip) for s, ks in zip(scores, keys, strict=True)]
                # IVF may return fewer than asked (few clips in the probed lists): widen.
                if all(len(o) >= min(k, live - len(skip & self._key_of.keys())) for o in out) or fetch >= live:
                    return out
                fetch = min(fetch * 2, live)

    def _collect(self, scores: np.ndarray, keys: np.ndarray, k: int, skip: set[str]) -> list[Hit]:
        hits: list[Hit] = []
        for score, key in zip(scores.tolist(), keys.tolist(), strict=True):
            if key < 0:
                continue
            clip_id = self._clip_of.get(key)
            if clip_id is None or clip_id in skip:
                continue
            hits.append(Hit(clip_id, float(score)))
            if len(hits) == k:
                break
        return hits

    def exact_search(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        """Brute force over the live vectors: the ground truth recall is measured against."""
        q = self._check(query)[0]
        with self._lock:
            keys = np.array(sorted(self._row_of), np.int64)
            if not len(keys):
                return []
            rows = np.array([self._row_of[x] for x in keys.tolist()])
            scores = self._vectors[rows] @ q
            top = np.argsort(-scores)[:k]
            return [Hit(self._clip_of[int(keys[i])], float(scores[i])) for i in top]

    # ------------------------------------------------------------------ snapshots
    def save(self, folder: Path) -> None:
        """Write the index and its log position to ``folder`` atomically (a crash leaves
        the previous snapshot whole)."""
        import faiss

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            tmp = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=folder.parent))
            try:
                faiss.write_index(self._index, str(tmp / "index.faiss"))
                np.save(tmp / "vectors.npy", self._vectors[: self._used])
                rows = sorted(self._row_of.items())
                np.save(tmp / "rows.npy", np.array(rows, np.int64).reshape(-1, 2))
                state = {
                    "version": SNAPSHOT_VERSION,
                    "dim": self.dim,
                    "model": self.model,
                    "kind": self._kind,
                    "next": self._next,
                    "trained_for": self._trained_for,
                    "clips": self._clip_of,
                    "live": self._key_of,
                    "position": self.position,
                    "settings": {"exact_below": self.exact_below, "nprobe": self.nprobe, "regrow": self.regrow},
                }
                (tmp / "state.json").write_text(json.dumps(state))
                swap_into_place(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    @classmethod
    def load(cls, folder: Path) -> ClipIndex:
        import faiss

        folder = Path(folder)
        try:
            state = json.loads((folder / "state.json").read_text())
            if state.get("version") != SNAPSHOT_VERSION:
                raise ClipIndexError(f"snapshot version {state.get('version')} is not {SNAPSHOT_VERSION}")
            index = cls(int(state["dim"]), model=str(state.get("model", "")), **state["settings"])
            index._index = faiss.read_index(str(folder / "index.faiss"))
            index._kind = state["kind"]
            index._trained_for = int(state["trained_for"])
            if index._kind == "ivf":
                index._index.nprobe = min(index.nprobe, index._index.nlist)
            index._vectors = np.load(folder / "vectors.npy")
            index._used = len(index._vectors)
            index._row_of = {int(k): int(r) for k, r in np.load(folder / "rows.npy").tolist()}
            index._clip_of = {int(k): v for k, v in state["clips"].items()}
            index._key_of = {k: int(v) for k, v in state["live"].items()}
            index._next = int(state["next"])
            index.position = {str(k): int(v) for k, v in state["position"].items()}
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise ClipIndexError(f"cannot load index snapshot {folder}: {exc}") from exc
        return index

    def stats(self) -> Mapping[str, Any]:
        with self._lock:
            return {
                "clips": len(self._key_of),
                "kind": self._kind,
                "dim": self.dim,
                "model": self.model,
                "bytes": int(self._vectors[: self._used].nbytes) + _index_bytes(self._index),
            }


def _index_bytes(index: Any) -> int:
    import faiss

    try:
        return len(faiss.serialize_index(index))
    except RuntimeError:
        return 0
