"""A local emulator of JD Cloud's putMetricData API, for tests, demos and load runs.

Package layout: ``app`` (routes), ``store`` (accepted points, counters), ``faults`` (fault
injection), ``verify`` (signature checks), ``replies`` (response bodies), ``server``
(``start_emulator``), ``__main__`` (command line). See ``docs/emulator.md``.
Must not import the gateway's pipeline modules (listener, aggregation, delivery).
"""

from gateway.emulator.faults import FaultSpecError, FaultState
from gateway.emulator.replies import ErrorStyle
from gateway.emulator.server import RunningEmulator, start_emulator
from gateway.emulator.store import EmulatorStats, PointStore, StoredPoint

__all__ = [
    "EmulatorStats",
    "ErrorStyle",
    "FaultSpecError",
    "FaultState",
    "PointStore",
    "RunningEmulator",
    "StoredPoint",
    "start_emulator",
]
