"""One process's hold on a cabinet: the lease row taken at start, renewed while it lives, released at the end.

A daemon (`formation serve`) and a foreground `formation run launch|resume` both drive a cabinet only under its
lease (`formation/store/queue.py`), so two processes on one database never drive the same cabinet. A holder that
cannot renew in time (database down, process stalled) may find the lease gone to another: ``lost`` is set, and
the holder stops driving at once, leaving the cells to the instrument (they own their step ends and its watchdog).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import UTC, datetime

from formation.errors import InputError, StoreError
from formation.orchestrator.timebase import unix_wall_s
from formation.store import Store

log = logging.getLogger(__name__)

#: Wall seconds a lease lasts without renewal; renewed every third of it.
LEASE_S = 30.0


def process_owner(kind: str) -> str:
    """A name for this process in lease and job rows: ``kind@host:pid:tag`` (the tag tells restarts apart)."""
    return f"{kind}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def owner_is_dead_here(owner: str) -> bool:
    """Whether ``owner`` (``kind@host:pid:tag``) names a process of this host that no longer exists."""
    _, _, rest = owner.partition("@")
    host, _, rest = rest.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists but is not ours to signal
        return False
    return False


class CabinetLeaseKeeper:
    """Holds ``cabinet`` for ``owner`` while the context is open; ``lost`` is set when another process took it."""

    def __init__(self, store: Store, cabinet: str, owner: str, *, ttl_s: float = LEASE_S) -> None:
        self.store = store
        self.cabinet = cabinet
        self.owner = owner
        self.ttl_s = ttl_s
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def try_acquire(self) -> bool:
        """Take (or renew) the lease; False when another live process holds it or the database refuses.

        A holder on this machine whose process is gone (killed) loses the lease at once rather than at expiry:
        a host restarted after a crash must re-attach before the instrument's watchdog stops the cells.
        """
        try:
            return await asyncio.to_thread(self._acquire)
        except StoreError as exc:
            log.warning("lease of cabinet %s not renewed: %s", self.cabinet, exc)
            return False

    def _acquire(self) -> bool:
        now = unix_wall_s()
        if self.store.hold_lease(self.cabinet, self.owner, self.ttl_s, now):
            return True
        for lease in self.store.leases():
            if lease.cabinet == self.cabinet and owner_is_dead_here(lease.owner):
                log.warning(
                    "cabinet %s: taking the lease of %s, a process gone from this host", self.cabinet, lease.owner
                )
                return self.store.take_over_lease(self.cabinet, self.owner, lease.owner, self.ttl_s, now)
        return False

    async def __aenter__(self) -> CabinetLeaseKeeper:
        if not await self.try_acquire():
            raise InputError("cabinet", self.holder_text())
        self._task = asyncio.create_task(self._renew(), name=f"lease-{self.cabinet}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.lost.is_set():
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.store.release_lease, self.cabinet, self.owner)

    def holder_text(self) -> str:
        """Who holds the cabinet, for a one-line refusal."""
        try:
            held = [lease for lease in self.store.leases() if lease.cabinet == self.cabinet]
        except StoreError:
            held = []
        if not held:
            return f"cabinet {self.cabinet}: its lease could not be taken (database refused)"
        until = datetime.fromtimestamp(held[0].expires_unix_s, UTC).strftime("%H:%M:%S UTC")
        return f"cabinet {self.cabinet} is driven by {held[0].owner} (lease until {until})"

    async def _renew(self) -> None:
        failures_since: float | None = None
        while True:
            await asyncio.sleep(self.ttl_s / 3.0)
            if await self.try_acquire():
                failures_since = None
                continue
            now = unix_wall_s()
            failures_since = failures_since if failures_since is not None else now
            # Lost for sure once another owner holds it, or once our own lease has run out unrenewed.
            if now - failures_since >= self.ttl_s * 2.0 / 3.0 or self._taken_by_other():
                log.error("cabinet %s: lease lost; no longer driving it", self.cabinet)
                self.lost.set()
                return

    def _taken_by_other(self) -> bool:
        try:
            return any(lease.cabinet == self.cabinet and lease.owner != self.owner for lease in self.store.leases())
        except StoreError:
            return False
