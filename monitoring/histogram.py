"""Fixed log-scale latency histogram whose merges are exact, so percentiles survive rollups."""

from __future__ import annotations

import math
import operator
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import accumulate, compress

# --- Bucket layout ------------------------------------------------------------------------
#
# The layout is fixed forever: stored blobs hold bucket *indexes*, so changing any of these
# constants silently reinterprets every histogram already in the database. A new layout
# needs a new ENCODING_VERSION.
#
#   bucket i (0 <= i < OVERFLOW_INDEX) covers [LOW_MS * GAMMA**i, LOW_MS * GAMMA**(i + 1)),
#   except that bucket 0 also takes everything below LOW_MS (including <= 0 and -inf) and
#   the last regular bucket is cut short at HIGH_MS;
#   bucket OVERFLOW_INDEX covers [HIGH_MS, +inf].
#
# NaN is rejected with ValueError: a NaN latency is a measuring bug upstream, and filing it
# under "0.1 ms" would quietly drag the percentiles down.

LOW_MS = 0.1
"""Lower edge of bucket 0, which also takes every value below it."""

HIGH_MS = 600_000.0
"""Ten minutes. Values at or above this land in the overflow bucket."""

GAMMA = 1.02
"""Ratio between consecutive bucket edges (2 % relative bucket width)."""

OVERFLOW_INDEX = math.ceil(math.log(HIGH_MS / LOW_MS) / math.log(GAMMA))  # 789
BUCKET_COUNT = OVERFLOW_INDEX + 1  # 790

MAX_RELATIVE_ERROR = math.sqrt(GAMMA) - 1
"""Worst relative error (~0.995 %) of a percentile for values in [LOW_MS, HIGH_MS)."""

ENCODING_VERSION = 1
EMPTY_ENCODING = bytes((ENCODING_VERSION,))

# The edge table, not the logarithm, is the definition of where a bucket starts: the log
# only guesses the index and is then corrected against the table, so a value exactly on an
# edge always lands in the bucket that edge opens.
_EDGES: list[float] = [LOW_MS * GAMMA**i for i in range(OVERFLOW_INDEX)] + [HIGH_MS, math.inf]
# Geometric midpoint: the value with equal *relative* distance to both edges. The overflow
# bucket has no upper edge, so the best it can say is "at least HIGH_MS".
_REPRESENTATIVE: list[float] = [
    math.sqrt(_EDGES[i] * _EDGES[i + 1]) for i in range(OVERFLOW_INDEX)
] + [HIGH_MS]
_INV_LOG_GAMMA = 1 / math.log(GAMMA)
_LAST_REGULAR = OVERFLOW_INDEX - 1
_INDEXES = range(BUCKET_COUNT)


def bucket_index(ms: float) -> int:
    """Return the bucket holding a latency in milliseconds; raise ValueError on NaN."""
    if ms >= HIGH_MS:
        return OVERFLOW_INDEX
    if not ms > LOW_MS:
        if ms != ms:
            raise ValueError("latency is NaN")
        return 0
    i = int(math.log(ms / LOW_MS) * _INV_LOG_GAMMA)
    if i > _LAST_REGULAR:
        i = _LAST_REGULAR
    # The log is off by at most one ulp-sized step, so one correction either way suffices.
    if ms < _EDGES[i]:
        i -= 1
    elif ms >= _EDGES[i + 1]:
        i += 1
    return i


def bucket_bounds(index: int) -> tuple[float, float]:
    """Return the [lower, upper) edges of a bucket (bucket 0 also holds everything below)."""
    if not 0 <= index < BUCKET_COUNT:
        raise IndexError(f"bucket index {index} out of range")
    return _EDGES[index], _EDGES[index + 1]


def bucket_value(index: int) -> float:
    """Return the value a percentile reports for a bucket: its geometric midpoint."""
    if not 0 <= index < BUCKET_COUNT:
        raise IndexError(f"bucket index {index} out of range")
    return _REPRESENTATIVE[index]


def _rank(q: float, total: int) -> int:
    # Nearest-rank: the smallest rank r with r >= q/100 * N. q * N before dividing keeps it
    # exact for integer q (7 / 100 * 100 would give 7.000000000000001 and rank 8).
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q!r}")
    return min(total, max(1, math.ceil(q * total / 100)))


class Histogram:
    """Counts of latencies per fixed bucket; merges are exact, associative and commutative.

    Percentiles use the nearest-rank definition: p(q) is the ceil(q/100 * N)-th smallest
    value (the first for q = 0). The histogram finds the bucket holding that value and
    reports the bucket's geometric midpoint, clamped to the observed min/max, so for values
    in [LOW_MS, HIGH_MS) the relative error is at most MAX_RELATIVE_ERROR (~1 %).

    min_ms / max_ms are tracked by add() and merge() but are not part of the encoding (the
    metric bucket stores them in their own columns), and equality ignores them: two
    histograms are equal when they would encode to the same bytes.
    """

    __slots__ = ("_counts", "_total", "max_ms", "min_ms")

    def __init__(self) -> None:
        # Sparse on purpose: a minute bucket usually fills a handful of the 790 buckets.
        # Invariant: no zero counts, so dict equality is histogram equality.
        self._counts: dict[int, int] = {}
        self._total = 0
        self.min_ms: float | None = None
        self.max_ms: float | None = None

    @classmethod
    def from_values(cls, values: Iterable[float]) -> Histogram:
        """Build a histogram from raw latencies in milliseconds."""
        hist = cls()
        for ms in values:
            hist.add(ms)
        return hist

    @property
    def total(self) -> int:
        """Number of latencies counted."""
        return self._total

    @property
    def is_empty(self) -> bool:
        return self._total == 0

    def add(self, ms: float, count: int = 1) -> None:
        """Count a latency `count` times; raise ValueError on NaN or a negative count."""
        count = operator.index(count)
        index = bucket_index(ms)
        if count <= 0:
            if count < 0:
                raise ValueError(f"count must not be negative, got {count}")
            return
        counts = self._counts
        counts[index] = counts.get(index, 0) + count
        self._total += count
        if self.min_ms is None or ms < self.min_ms:
            self.min_ms = ms
        if self.max_ms is None or ms > self.max_ms:
            self.max_ms = ms

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts (and widen min/max) into this one."""
        counts = self._counts
        for index, count in other._counts.items():
            counts[index] = counts.get(index, 0) + count
        self._total += other._total
        if other.min_ms is not None and (self.min_ms is None or other.min_ms < self.min_ms):
            self.min_ms = other.min_ms
        if other.max_ms is not None and (self.max_ms is None or other.max_ms > self.max_ms):
            self.max_ms = other.max_ms

    def __iadd__(self, other: Histogram) -> Histogram:
        if not isinstance(other, Histogram):
            return NotImplemented
        self.merge(other)
        return self

    def copy(self) -> Histogram:
        clone = Histogram()
        clone._counts = dict(self._counts)
        clone._total = self._total
        clone.min_ms = self.min_ms
        clone.max_ms = self.max_ms
        return clone

    def buckets(self) -> list[tuple[int, int]]:
        """Return the non-empty (bucket index, count) pairs in index order."""
        return sorted(self._counts.items())

    def percentile(
        self, q: float, lo: float | None = None, hi: float | None = None
    ) -> float | None:
        """Return the nearest-rank q-th percentile (q in 0..100), or None when empty.

        lo / hi clamp the answer; they default to the tracked min_ms / max_ms, which a
        decoded histogram does not have, so pass the stored latency min/max there.
        """
        return self.percentiles((q,), lo, hi)[q]

    def percentiles(
        self, qs: Iterable[float], lo: float | None = None, hi: float | None = None
    ) -> dict[float, float | None]:
        """Return {q: percentile(q, lo, hi)} for several q in one pass over the buckets."""
        qs = list(qs)
        total = self._total
        if total == 0:
            for q in qs:
                _rank(q, 1)  # still reject a bad q on an empty histogram
            return dict.fromkeys(qs)
        if lo is None:
            lo = self.min_ms
        if hi is None:
            hi = self.max_ms
        counts = self._counts
        indexes = sorted(counts)
        cumulative = list(accumulate(map(counts.__getitem__, indexes)))
        return _pick(qs, indexes, cumulative, lo, hi)

    def encode(self) -> bytes:
        """Return the compact sparse encoding: version byte, then varint (index delta, count)."""
        return encode_counts(self._counts)

    @classmethod
    def decode(cls, blob: bytes | bytearray | memoryview) -> Histogram:
        """Rebuild a histogram from encode()'s bytes; b"" counts as empty (a blank column).

        Raise ValueError on anything encode() could not have produced.
        """
        dense = [0] * BUCKET_COUNT
        return _from_dense(dense, _accumulate(blob, dense))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self._counts == other._counts

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"<Histogram total={self._total} buckets={len(self._counts)} "
            f"min_ms={self.min_ms} max_ms={self.max_ms}>"
        )


# --- Encoding ----------------------------------------------------------------------------
# A blob is a version byte, then for each non-empty bucket in index order a varint of the
# index delta (from -1 for the first) and a varint of the count. The rollup rewrites every
# hour and day blob a batch touches, hundreds per batch, so the two {index: count} functions
# below are its hot path: one-byte values (nearly all) skip the varint loop.


def encode_counts(counts: dict[int, int]) -> bytes:
    """Encode sparse {bucket index: count} (no zero counts) as the blob Histogram.encode gives."""
    out = [ENCODING_VERSION]
    previous = -1
    for index in sorted(counts):
        delta, count = index - previous, counts[index]
        previous = index
        if delta < 0x80:
            out.append(delta)
        else:
            _put_varint(out, delta)
        if count < 0x80:
            out.append(count)
        else:
            _put_varint(out, count)
    return bytes(out)


def decode_counts(blob: bytes | bytearray | memoryview | None) -> dict[int, int]:
    """Read a blob into sparse {bucket index: count}; None and b"" count as empty.

    The writer's path for the blobs it reads back to add to. It rejects what Histogram.decode
    rejects except a repeated bucket or a zero count: checking those on every pair would
    slow the rollup, and only a hand-made blob holds them.
    """
    counts: dict[int, int] = {}
    if not blob:
        return counts
    if type(blob) is not bytes:
        blob = bytes(blob)  # PostgreSQL returns memoryview
    if blob[0] != ENCODING_VERSION:
        raise ValueError(f"unknown histogram encoding version {blob[0]}")
    index, pos, end = -1, 1, len(blob)
    try:
        while pos < end:
            value = blob[pos]
            pos += 1
            if value & 0x80:
                # Two bytes (a day's counts, a first index) without a call; longer the long way.
                high = blob[pos]
                if 0 < high < 0x80:
                    value = (value & 0x7F) | high << 7
                    pos += 1
                else:
                    value, pos = _varint_tail(blob, pos, value)
            index += value
            count = blob[pos]
            pos += 1
            if count & 0x80:
                high = blob[pos]
                if 0 < high < 0x80:
                    count = (count & 0x7F) | high << 7
                    pos += 1
                else:
                    count, pos = _varint_tail(blob, pos, count)
            counts[index] = count
    except IndexError:
        raise ValueError("histogram encoding truncated") from None
    # Deltas are never negative, so the last index is the largest.
    if index >= BUCKET_COUNT:
        raise ValueError(f"histogram bucket index {index} out of range")
    return counts


def _put_varint(out: list[int], value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


# --- Merging blobs ------------------------------------------------------------------------


def merge_encoded(blobs: Iterable[bytes | bytearray | memoryview | None]) -> Histogram:
    """Merge many encoded histograms straight from their bytes; None and b"" count as empty.

    This is the query layer's path (thousands of blobs per chart), so it decodes every blob
    into one shared dense list instead of building a Histogram per blob. The result has no
    min_ms / max_ms: pass the stored ones to percentile().
    """
    dense = [0] * BUCKET_COUNT
    total = 0
    for blob in blobs:
        if blob:
            total += _accumulate(blob, dense)
    return _from_dense(dense, total)


def percentiles_encoded(
    blobs: Iterable[bytes | bytearray | memoryview | None],
    qs: Iterable[float],
    lo: float | None = None,
    hi: float | None = None,
) -> dict[float, float | None]:
    """Return merge_encoded(blobs).percentiles(qs, lo, hi) without building the Histogram.

    The query layer's path for a chart point: it asks for a few percentiles of a merge and
    nothing else, so it reads them off the cumulative counts of the dense merge.
    """
    blobs = [blob for blob in blobs if blob]
    qs = list(qs)
    if len(blobs) == 1:
        # One blob (a chart point of one bucket): where every count is one byte its
        # running counts are read straight off the bytes, no 790-bucket dense merge.
        pairs = _one_byte_pairs(blobs[0] if type(blobs[0]) is bytes else bytes(blobs[0]))
        if pairs is not None:
            return _pick(qs, pairs[0], list(accumulate(pairs[1])), lo, hi)
    dense = [0] * BUCKET_COUNT
    total = 0
    for blob in blobs:
        total += _accumulate(blob, dense)
    if not total:
        for q in qs:
            _rank(q, 1)  # still reject a bad q when there is nothing to rank
        return dict.fromkeys(qs)
    return _pick(qs, _INDEXES, list(accumulate(dense)), lo, hi)


def _pick(
    qs: list[float],
    indexes: Sequence[int],
    cumulative: list[int],
    lo: float | None,
    hi: float | None,
) -> dict[float, float | None]:
    """Percentiles from running counts: cumulative[i] values lie in buckets up to indexes[i]."""
    total = cumulative[-1]
    result: dict[float, float | None] = {}
    for q in qs:
        # The nearest-rank value lives in the first bucket whose running count reaches the
        # rank; empty buckets never are that first one, as they leave the count unchanged.
        value = _REPRESENTATIVE[indexes[bisect_left(cumulative, _rank(q, total))]]
        if lo is not None and value < lo:
            value = lo
        if hi is not None and value > hi:
            value = hi
        result[q] = value
    return result


def _from_dense(dense: list[int], total: int) -> Histogram:
    hist = Histogram()
    hist._total = total
    if total:
        # compress() picks the non-empty buckets in C; a Python pass over all 790 buckets
        # costs more than decoding a typical minute blob.
        hist._counts = dict(zip(compress(_INDEXES, dense), compress(dense, dense), strict=True))
    return hist


def _one_byte_pairs(blob: bytes) -> tuple[list[int], bytes] | None:
    """(bucket indexes, counts) of a blob whose deltas after the first index and whose
    counts all take one byte, or None for any other blob (malformed ones included)."""
    if len(blob) < 3 or blob[0] != ENCODING_VERSION:
        return None
    first, pos = blob[1], 2
    if first & 0x80:
        high = blob[2]
        if not 0 < high < 0x80:
            return None
        first, pos = (first & 0x7F) | high << 7, 3
    tail = blob[pos:]  # the first count, then (delta, count) pairs
    if not (first and len(tail) & 1 and tail.isascii() and b"\x00" not in tail):
        return None
    indexes = list(accumulate(tail[1::2], initial=first - 1))  # from -1, as encoded
    if indexes[-1] >= BUCKET_COUNT:
        return None
    return indexes, tail[::2]


def _accumulate(blob: bytes | bytearray | memoryview, dense: list[int]) -> int:
    """Add one blob's counts into `dense` (indexed by bucket) and return how many it held."""
    # PostgreSQL hands BinaryField values back as memoryview; bytes index fastest.
    if type(blob) is not bytes:
        blob = bytes(blob)
    # Fast path for the common shape: an absolute first index of one or two bytes, then
    # one byte for every delta and count, walked by slicing (several times faster than
    # parsing). A minute's tail often ends in one longer jump to a slow outlier; the
    # one-byte run before it still takes the fast path and the general loop parses the
    # rest. A malformed blob fails a check here and the general loop reports what is wrong.
    if len(blob) > 2 and blob[0] == ENCODING_VERSION:
        first = blob[1]
        pos = 2
        if first & 0x80:
            high = blob[2]
            first = (first & 0x7F) | high << 7
            pos = 3 if 0 < high < 0x80 else 0
        if pos and first:
            end = len(blob)
            tail = blob[pos:]  # count, then (delta, count) pairs
            if not (tail.isascii() and b"\x00" not in tail):
                end = _ONE_BYTE_RUN.match(blob, pos).end()
                end -= (end - pos + 1) & 1  # stop after a count
                tail = blob[pos:end]
            if len(tail) & 1:
                deltas = tail[1::2]
                counts = tail[::2]
                first -= 1  # the first "delta" counts from index -1
                last = first + sum(deltas)
                if last < BUCKET_COUNT:
                    for index, count in zip(accumulate(deltas, initial=first), counts, strict=True):
                        dense[index] += count
                    if end == len(blob):
                        return sum(counts)
                    return sum(counts) + _accumulate_general(blob, dense, end, last)
    return _accumulate_general(blob, dense)


_ONE_BYTE_RUN = re.compile(b"[\x01-\x7f]*")


def _accumulate_general(blob: bytes, dense: list[int], pos: int = 1, index: int = -1) -> int:
    """_accumulate() the long way, from `pos` (a bucket index) on, after bucket `index`."""
    end = len(blob)
    if end == 0:
        return 0
    if blob[0] != ENCODING_VERSION:
        raise ValueError(f"unknown histogram encoding version {blob[0]}")
    total = 0
    while pos < end:
        byte = blob[pos]
        pos += 1
        if byte & 0x80:
            delta, pos = _varint_tail(blob, pos, byte)
        else:
            delta = byte
        if pos >= end:
            raise ValueError("histogram encoding truncated after a bucket index")
        byte = blob[pos]
        pos += 1
        if byte & 0x80:
            count, pos = _varint_tail(blob, pos, byte)
        else:
            count = byte
        if delta == 0 or count == 0:
            raise ValueError("histogram encoding has a repeated bucket or a zero count")
        index += delta
        if index >= BUCKET_COUNT:
            raise ValueError(f"histogram bucket index {index} out of range")
        dense[index] += count
        total += count
    return total


def _varint_tail(blob: bytes, pos: int, first: int) -> tuple[int, int]:
    value = first & 0x7F
    shift = 7
    end = len(blob)
    while True:
        if pos >= end:
            raise ValueError("histogram encoding truncated inside a varint")
        byte = blob[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            # A trailing zero group is a longer spelling of a shorter varint; refusing it
            # keeps every accepted blob canonical, so decode-then-encode gives it back.
            if byte == 0:
                raise ValueError("histogram encoding has a non-minimal varint")
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("histogram encoding has an oversized varint")
