"""Where the Prefect tasks keep their results and how concurrent runs share the cache.

Declared on each task (``@task(**cached(key_fn))``), not through environment variables: a Prefect
worker imports Prefect before our modules, so settings exported at import time never reach the
flow runs it starts. Every task persists its small JSON result under ``CONURE_HOME/prefect/results``
(a path, which Prefect turns into a ``LocalFileSystem`` block; an unsaved block is refused on a
task) and caches on its inputs' digests, so a CLI run and a worker-run deployment on the same home
hit the same cache.

Isolation is SERIALIZABLE: before computing a step, a run takes a lock on its cache key; a second
run with the same key (a parallel backfill sharing a prefix) waits and then reads the first one's
result instead of computing it again. The lock is an OS file lock (``CacheLocks``), not Prefect's
``FileSystemLockManager``, whose lock files have no expiry and outlive a process killed by
``kill -9``: a resumed run would wait for them forever.
"""
from __future__ import annotations

import threading
from pathlib import Path

from prefect.cache_policies import CacheKeyFnPolicy
from prefect.transactions import IsolationLevel

from tasks.settings import Layout


class CacheLocks:
    """Prefect ``LockManager`` on ``filelock`` locks, one file per cache key under a folder.

    The OS releases a lock when its process dies (even by SIGKILL); threads of one process
    exclude each other too (each acquisition opens its own file description). The folder is
    resolved at run time from ``CONURE_HOME`` unless given.
    """

    def __init__(self, directory: Path | None = None):
        self._directory = directory
        self._held: dict[str, tuple[str, object]] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str):
        from filelock import FileLock

        folder = self._directory or Layout().cache_locks
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / f"{key}.lock"), thread_local=False)

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        from filelock import Timeout

        with self._guard:
            if self._held.get(key, ("",))[0] == holder:
                return True
        lock = self._lock(key)
        try:
            lock.acquire(timeout=-1 if acquire_timeout is None else acquire_timeout)
        except Timeout:
            return False
        with self._guard:
            self._held[key] = (holder, lock)
        return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                            hold_timeout: float | None = None) -> bool:
        import anyio

        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        with self._guard:
            if self._held.get(key, ("",))[0] != holder:
                raise ValueError(f"No lock held by {holder} for transaction with key {key}")
            _, lock = self._held.pop(key)
        lock.release()

    def is_locked(self, key: str) -> bool:
        with self._guard:
            if key in self._held:
                return True
        return not self.wait_for_lock(key, timeout=0)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with self._guard:
            return self._held.get(key, ("",))[0] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        from filelock import Timeout

        probe = self._lock(key)
        try:
            probe.acquire(timeout=-1 if timeout is None else timeout, blocking=timeout != 0)
        except Timeout:
            return False
        probe.release()
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        import anyio

        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)


LOCKS = CacheLocks()  # resolves its folder per call, so one instance serves every home


def cached(key_fn, layout: Layout | None = None) -> dict:
    """``@task`` options: JSON results persisted under the home, cached on ``key_fn``, serialised per key."""
    policy = CacheKeyFnPolicy(cache_key_fn=key_fn).configure(lock_manager=LOCKS,
                                                              isolation_level=IsolationLevel.SERIALIZABLE)
    return {"cache_policy": policy, "persist_result": True, "result_serializer": "json",
            "result_storage": (layout or Layout()).results}


_bound: dict[tuple[str, Path], object] = {}


def for_home(task_fn):
    """``task_fn`` with its result storage in the current ``CONURE_HOME`` (resolved at call time).

    The decorators resolve the home when the module is imported; a process that changes
    ``CONURE_HOME`` later gets a copy of the task bound to the new home.
    """
    lay = Layout()
    if Path(task_fn.result_storage) == lay.results:
        return task_fn
    key = (task_fn.name, lay.root)
    if key not in _bound:
        _bound[key] = task_fn.with_options(**cached(task_fn.cache_policy.cache_key_fn, lay))
    return _bound[key]
