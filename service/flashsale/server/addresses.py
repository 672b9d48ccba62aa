"""Open connections per client address across a pod's workers (FLASHSALE_MAX_CONN_PER_IP).

The table lives in shared memory made by the gunicorn master before it forks, so every worker
sees one table. Each worker writes only its own row (no lock between processes), and an
address's count is the sum of its cell over the rows. The master hands a row to each worker it
forks and zeroes it when the worker exits, so a worker that dies with connections open leaves no
count behind.

An address is counted in the cell its hash picks. Python's string hash is keyed at random when
the master starts (every worker inherits the key), so nobody can choose addresses that share a
cell with a victim's; two addresses in one cell (1 in 16,384 per pair) share one cap.
"""

from __future__ import annotations

import ctypes
import mmap

SLOTS = 16_384


class AddressTable:
    def __init__(self, rows: int, slots: int = SLOTS):
        self.rows, self.slots = rows, slots
        # Anonymous and MAP_SHARED (mmap's default): forked workers share these pages.
        self._memory = mmap.mmap(-1, rows * slots * ctypes.sizeof(ctypes.c_uint16))
        self._cells = (ctypes.c_uint16 * (rows * slots)).from_buffer(self._memory)
        self._free = list(range(rows))  # the master's bookkeeping

    # --- in the master ----------------------------------------------------------------------

    def claim(self) -> int | None:
        """A row for a worker about to be forked; None when every row is taken."""
        return self._free.pop(0) if self._free else None

    def release(self, row: int | None) -> None:
        """The worker of `row` exited: forget its connections, free the row."""
        if row is None or row in self._free:
            return
        start = row * self.slots
        ctypes.memset(ctypes.addressof(self._cells) + start * 2, 0, self.slots * 2)
        self._free.append(row)

    # --- in a worker ------------------------------------------------------------------------

    def open(self, row: int, address: str, cap: int) -> int | None:
        """Count a connection of `address` in `row` and return its cell, or None (nothing
        counted) when the pod already holds `cap` connections of that address. Two workers
        accepting at the same instant may both pass at cap - 1: the cap holds to within one
        connection per worker."""
        slot = hash(address) % self.slots
        if self.count(slot) >= cap:
            return None
        self._cells[row * self.slots + slot] += 1
        return slot

    def close(self, row: int, slot: int) -> None:
        index = row * self.slots + slot
        if self._cells[index]:
            self._cells[index] -= 1

    def count(self, slot: int) -> int:
        cells, slots = self._cells, self.slots
        return sum(cells[row * slots + slot] for row in range(self.rows))
