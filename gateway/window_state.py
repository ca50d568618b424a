"""The open windows' state as bytes, for the spool: saved on shutdown, loaded at start.

The format is a numpy ``.npz`` archive (no pickles) holding the columns, plus one JSON
document (as a uint8 array) with what is not numeric: series keys, window starts, set
members (base64).  It is written through ``Spool.save_state``, which adds a checksum and
writes atomically.  Only this module and the aggregation modules import numpy.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.protocol import SeriesKey
from gateway.window import Floats


@dataclass(frozen=True, slots=True)
class AggregatorState:
    """The unreported part of an aggregator, as ``export_state`` hands it over.

    ``gauges`` rows are the running value and the value as of the last closed window;
    each window holds its five columns (sum, count, min, max, last), the touched mask and
    the set members by series index.  ``dump`` and ``load`` below turn it into bytes.
    """

    length: int
    next_close: int
    keys: list[SeriesKey | None]
    """Per slot; None for a free slot."""
    kinds: npt.NDArray[np.int8]
    gauges: Floats
    gauge_live: npt.NDArray[np.bool_]
    gauge_closed_start: npt.NDArray[np.int64]
    windows: dict[int, tuple[Floats, npt.NDArray[np.bool_], dict[int, list[bytes]]]]


FORMAT = 1


def dump(state: AggregatorState) -> bytes:
    meta: dict[str, Any] = {
        "format": FORMAT,
        "length": state.length,
        "next_close": state.next_close,
        "keys": [
            None if key is None else [key[0], [list(pair) for pair in key[1]]] for key in state.keys
        ],
        "windows": [
            {
                "start": start,
                "sets": {
                    str(i): [base64.b64encode(m).decode() for m in members]
                    for i, members in sets.items()
                },
            }
            for start, (_, _, sets) in state.windows.items()
        ],
    }
    arrays: dict[str, npt.NDArray[Any]] = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "kinds": state.kinds,
        "gauges": state.gauges,
        "gauge_live": state.gauge_live,
        "gauge_closed_start": state.gauge_closed_start,
    }
    for n, (_, (columns, touched, _)) in enumerate(state.windows.items()):
        arrays[f"w{n}_columns"] = columns
        arrays[f"w{n}_touched"] = touched
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, **arrays)
    return out.getvalue()


def load(data: bytes) -> AggregatorState:
    """Raises ValueError when ``data`` is not a state this version can read."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes())
            if meta.get("format") != FORMAT:
                raise ValueError(f"state format {meta.get('format')!r} is not {FORMAT}")
            windows = {}
            for n, window in enumerate(meta["windows"]):
                sets = {
                    int(i): [base64.b64decode(m) for m in members]
                    for i, members in window["sets"].items()
                }
                windows[int(window["start"])] = (
                    archive[f"w{n}_columns"],
                    archive[f"w{n}_touched"],
                    sets,
                )
            return AggregatorState(
                length=int(meta["length"]),
                next_close=int(meta["next_close"]),
                keys=[
                    None if key is None else (key[0], tuple((k, v) for k, v in key[1]))
                    for key in meta["keys"]
                ],
                kinds=archive["kinds"],
                gauges=archive["gauges"],
                gauge_live=archive["gauge_live"],
                gauge_closed_start=archive["gauge_closed_start"],
                windows=windows,
            )
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"unreadable window state: {exc}") from None
