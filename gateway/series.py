"""Series identity: a sample's metric and tags become the point's final dimensions.

A series is (namespace, metric, dimensions) *after* sanitising and limits, because two
StatsD series that end up with the same dimensions would otherwise be two points for one
API series and overwrite each other.  So limits are applied here, before aggregation, not
when points are built.

The static dimensions come first, then the sample's tags in byte order of their sanitised
keys.  A tag whose key is a static key is dropped; the others are added greedily while the
point stays within ``max_dimensions`` entries and ``max_dimension_bytes`` bytes (keys plus
values), so a later, smaller tag may still fit after a large one was dropped.

Pure: no I/O, no logging, no numpy.
"""

from __future__ import annotations

import enum

from gateway.protocol import SeriesKey, Tags


class TagDrop(enum.StrEnum):
    """Why a tag did not become a dimension; the ``reason`` label in ``/metrics``."""

    STATIC_KEY = "static_key"
    MAX_DIMENSIONS = "max_dimensions"
    MAX_DIMENSION_BYTES = "max_dimension_bytes"


EMPTY_VALUE = "_"
"""An empty tag value (``#env:``) is sent as ``_``: the API refuses empty dimension values."""


class SeriesNamer:
    """Turns (metric, tags) into a ``SeriesKey`` plus the reasons of the tags it dropped."""

    def __init__(
        self, static: Tags, *, max_dimensions: int = 5, max_dimension_bytes: int = 255
    ) -> None:
        self._static = tuple(static)
        self._static_keys = frozenset(key for key, _ in static)
        self._static_bytes = sum(len(key) + len(value) for key, value in static)
        self._max_dimensions = max_dimensions
        self._max_bytes = max_dimension_bytes

    def __call__(self, metric: str, tags: Tags) -> tuple[SeriesKey, tuple[str, ...]]:
        if not tags:
            return (metric, self._static), ()
        dimensions = list(self._static)
        used = self._static_bytes
        drops: list[str] = []
        for key, value in tags:
            value = value or EMPTY_VALUE
            if key in self._static_keys:
                drops.append(TagDrop.STATIC_KEY)
            elif len(dimensions) >= self._max_dimensions:
                drops.append(TagDrop.MAX_DIMENSIONS)
            elif used + len(key) + len(value) > self._max_bytes:
                drops.append(TagDrop.MAX_DIMENSION_BYTES)
            else:
                dimensions.append((key, value))
                used += len(key) + len(value)
        return (metric, tuple(dimensions)), tuple(drops)
