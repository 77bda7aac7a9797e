"""Tests for the fixed log-scale latency histogram and its encoding."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from monitoring.histogram import (
    BUCKET_COUNT,
    EMPTY_ENCODING,
    GAMMA,
    HIGH_MS,
    LOW_MS,
    MAX_RELATIVE_ERROR,
    OVERFLOW_INDEX,
    Histogram,
    bucket_bounds,
    bucket_index,
    bucket_value,
    decode_counts,
    encode_counts,
    merge_encoded,
    percentiles_encoded,
)

in_range = st.floats(min_value=LOW_MS, max_value=HIGH_MS, exclude_max=True)
any_latency = st.floats(allow_nan=False)  # includes <= 0, subnormals and both infinities
latency_lists = st.lists(in_range | any_latency, max_size=200)
percentile_q = st.integers(0, 100) | st.floats(0, 100)


def exact_nearest_rank(values: list[float], q: float) -> float:
    # The documented definition, written out independently: the ceil(q/100 * N)-th smallest.
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered) / 100))
    return ordered[rank - 1]


def merged(*hists: Histogram) -> Histogram:
    out = Histogram()
    for hist in hists:
        out += hist
    return out


def reference_encoding(counts: dict[int, int]) -> bytes:
    # The documented format written out plainly, one varint routine for every value.
    def varint(value: int) -> bytes:
        out = bytearray()
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    blob, previous = bytes([1]), -1
    for index in sorted(counts):
        blob += varint(index - previous) + varint(counts[index])
        previous = index
    return blob


# --- layout ---------------------------------------------------------------------------------


def test_layout_covers_a_tenth_of_a_millisecond_to_ten_minutes_in_2_percent_steps():
    assert GAMMA == 1.02
    assert 780 <= BUCKET_COUNT <= 800
    assert bucket_bounds(0)[0] == LOW_MS
    assert bucket_bounds(OVERFLOW_INDEX) == (HIGH_MS, math.inf)
    assert bucket_bounds(OVERFLOW_INDEX - 1)[1] == HIGH_MS
    for i in range(OVERFLOW_INDEX - 1):
        lower, upper = bucket_bounds(i)
        assert upper / lower == pytest.approx(GAMMA, rel=1e-12)


def test_a_value_exactly_on_an_edge_lands_in_the_bucket_that_edge_opens():
    for i in range(BUCKET_COUNT):
        lower, _ = bucket_bounds(i)
        assert bucket_index(lower) == i
        if i > 0:
            assert bucket_index(math.nextafter(lower, 0)) == i - 1


def test_every_bucket_reports_its_geometric_midpoint():
    for i in range(OVERFLOW_INDEX):
        lower, upper = bucket_bounds(i)
        assert lower < bucket_value(i) < upper
        assert bucket_value(i) == pytest.approx(math.sqrt(lower * upper))
    assert bucket_value(OVERFLOW_INDEX) == HIGH_MS


def test_values_below_the_range_go_to_the_first_bucket_and_above_to_overflow():
    assert bucket_index(LOW_MS / 2) == 0
    assert bucket_index(0.0) == 0
    assert bucket_index(-5.0) == 0
    assert bucket_index(-math.inf) == 0
    assert bucket_index(HIGH_MS) == OVERFLOW_INDEX
    assert bucket_index(HIGH_MS * 100) == OVERFLOW_INDEX
    assert bucket_index(math.inf) == OVERFLOW_INDEX
    assert bucket_index(math.nextafter(HIGH_MS, 0)) == OVERFLOW_INDEX - 1


def test_nan_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        bucket_index(math.nan)
    hist = Histogram()
    with pytest.raises(ValueError, match="NaN"):
        hist.add(math.nan)
    assert hist.is_empty


@given(any_latency)
def test_bucket_index_never_raises_and_stays_in_range(ms):
    assert 0 <= bucket_index(ms) < BUCKET_COUNT


@given(any_latency)
def test_a_value_lies_within_its_buckets_edges(ms):
    lower, upper = bucket_bounds(bucket_index(ms))
    if ms >= LOW_MS:
        assert lower <= ms < upper or (ms == math.inf and upper == math.inf)
    else:
        assert lower == LOW_MS


@given(any_latency, any_latency)
def test_bucket_index_is_monotonic(a, b):
    low, high = sorted((a, b))
    assert bucket_index(low) <= bucket_index(high)


# --- the histogram --------------------------------------------------------------------------


def test_an_empty_histogram_has_no_percentiles():
    hist = Histogram()
    assert hist.is_empty
    assert hist.total == 0
    assert hist.percentile(50) is None
    assert hist.percentiles([50, 99]) == {50: None, 99: None}
    assert hist.min_ms is None
    assert hist.max_ms is None


def test_add_counts_a_value_many_times_and_tracks_min_and_max():
    hist = Histogram()
    hist.add(120.0, count=3)
    hist.add(5.0)
    hist.add(7.0, count=0)  # counted nowhere, min untouched
    assert hist.total == 4
    assert not hist.is_empty
    assert hist.min_ms == 5.0
    assert hist.max_ms == 120.0
    assert hist.buckets() == [(bucket_index(5.0), 1), (bucket_index(120.0), 3)]


def test_add_rejects_negative_and_fractional_counts():
    hist = Histogram()
    with pytest.raises(ValueError):
        hist.add(10.0, count=-1)
    with pytest.raises(TypeError):
        hist.add(10.0, count=1.5)  # type: ignore[arg-type]
    assert hist.is_empty


def test_percentile_rejects_q_outside_0_to_100():
    hist = Histogram.from_values([1.0, 2.0])
    for q in (-1, 100.5, math.nan):
        with pytest.raises(ValueError):
            hist.percentile(q)
    with pytest.raises(ValueError):
        Histogram().percentile(101)


def test_percentile_is_clamped_to_the_observed_min_and_max():
    hist = Histogram.from_values([30_000.0] * 10)
    assert hist.percentile(99) == 30_000.0
    decoded = Histogram.decode(hist.encode())
    assert decoded.min_ms is None
    assert decoded.percentile(99) == pytest.approx(30_000.0, rel=MAX_RELATIVE_ERROR)
    assert decoded.percentile(99) != 30_000.0
    assert decoded.percentile(99, lo=30_000.0, hi=30_000.0) == 30_000.0


def test_explicit_clamps_override_the_tracked_ones():
    hist = Histogram.from_values([100.0, 200.0])
    assert hist.percentile(100, hi=150.0) == 150.0
    assert hist.percentile(0, lo=101.0) == 101.0


def test_overflow_percentile_reports_the_top_edge_unless_max_is_known():
    decoded = Histogram.decode(Histogram.from_values([900_000.0]).encode())
    assert decoded.percentile(50) == HIGH_MS
    assert decoded.percentile(50, hi=900_000.0, lo=900_000.0) == 900_000.0


def test_percentiles_answers_several_quantiles_in_input_order():
    hist = Histogram.from_values(float(v) for v in range(1, 1001))
    result = hist.percentiles([99, 50, 95, 0, 100])
    assert list(result) == [99, 50, 95, 0, 100]
    for q, expected in [(50, 500.0), (95, 950.0), (99, 990.0), (0, 1.0), (100, 1000.0)]:
        assert result[q] == pytest.approx(expected, rel=MAX_RELATIVE_ERROR)
        assert result[q] == hist.percentile(q)


def test_nearest_rank_uses_exact_ranks_for_integer_q():
    # 7 / 100 * 100 is 7.000000000000001 in floats; the rank must still be 7, not 8.
    values = [float(v) for v in range(1, 101)]
    hist = Histogram.from_values(values)
    assert hist.percentile(7) == pytest.approx(7.0, rel=MAX_RELATIVE_ERROR)


def test_equality_is_over_counts_not_min_and_max():
    a = Histogram.from_values([10.0])
    b = Histogram.from_values([10.0001])
    assert bucket_index(10.0) == bucket_index(10.0001)
    assert a == b
    assert a != Histogram.from_values([10.0, 10.0])
    assert a != "histogram"
    with pytest.raises(TypeError):
        hash(a)


def test_copy_is_independent():
    original = Histogram.from_values([1.0, 50.0])
    clone = original.copy()
    clone.add(900.0)
    assert original.total == 2
    assert original.max_ms == 50.0
    assert clone.total == 3
    assert clone != original


def test_merge_leaves_the_other_histogram_untouched():
    a = Histogram.from_values([1.0])
    b = Histogram.from_values([2.0, 3.0])
    a.merge(b)
    a.add(4.0)
    assert b.total == 2
    assert b == Histogram.from_values([2.0, 3.0])
    assert a.total == 4
    assert (a.min_ms, a.max_ms) == (1.0, 4.0)


def test_merging_an_empty_histogram_keeps_min_and_max():
    a = Histogram.from_values([5.0, 9.0])
    a += Histogram()
    assert (a.min_ms, a.max_ms, a.total) == (5.0, 9.0, 2)
    empty = Histogram()
    empty += a
    assert (empty.min_ms, empty.max_ms, empty.total) == (5.0, 9.0, 2)


@given(st.lists(in_range, min_size=1, max_size=300), percentile_q)
@example([0.1, 599_999.9], 50)
@example([0.1] * 3 + [599_999.9] * 2, 100)
def test_percentile_is_within_one_percent_of_the_exact_nearest_rank(values, q):
    hist = Histogram.from_values(values)
    exact = exact_nearest_rank(values, q)
    approx = hist.percentile(q)
    assert abs(approx - exact) / exact <= MAX_RELATIVE_ERROR * (1 + 1e-9)
    assert MAX_RELATIVE_ERROR < 0.02
    # Without the tracked min/max (as after decoding) the bound still holds.
    unclamped = Histogram.decode(hist.encode()).percentile(q)
    assert abs(unclamped - exact) / exact <= MAX_RELATIVE_ERROR * (1 + 1e-9)


@given(latency_lists)
def test_add_never_raises_on_out_of_range_values(values):
    hist = Histogram.from_values(values)
    assert hist.total == len(values)
    if values:
        assert hist.percentile(50) is not None


# --- encoding -------------------------------------------------------------------------------


def test_an_empty_histogram_encodes_to_a_single_version_byte():
    assert Histogram().encode() == EMPTY_ENCODING
    assert len(EMPTY_ENCODING) == 1
    assert Histogram.decode(EMPTY_ENCODING).is_empty


def test_a_blank_column_decodes_as_empty():
    assert Histogram.decode(b"").is_empty
    assert merge_encoded([None, b"", EMPTY_ENCODING]).is_empty


def test_a_typical_minute_encodes_in_a_few_bytes_per_bucket():
    hist = Histogram.from_values([118.0, 121.0, 125.0, 130.0, 122.0, 1_000.0])
    encoded = hist.encode()
    # version + (delta, count) pairs; only the first index (357) needs a two-byte varint.
    assert hist.buckets()[0][0] == 357
    assert len(encoded) == 1 + 2 * len(hist.buckets()) + 1


def test_large_counts_and_the_last_bucket_round_trip():
    hist = Histogram()
    hist.add(0.0, count=2**40)
    hist.add(math.inf, count=300)
    assert Histogram.decode(hist.encode()).buckets() == [(0, 2**40), (OVERFLOW_INDEX, 300)]


def test_decode_accepts_memoryview_and_bytearray():
    hist = Histogram.from_values([3.0, 300.0, 3000.0])
    blob = hist.encode()
    assert Histogram.decode(memoryview(blob)) == hist
    assert Histogram.decode(bytearray(blob)) == hist
    assert merge_encoded([memoryview(blob), bytearray(blob)]).total == 6


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x02", "version"),
        (b"\x01\x05", "truncated"),
        (b"\x01\x85", "truncated"),
        (b"\x01\x05\x81", "truncated"),
        (b"\x01\x05\x00", "zero count"),
        (b"\x01\x05\x01\x00\x01", "repeated bucket"),
        (b"\x01\x80\x00\x01", "non-minimal"),
        (b"\x01\x97\x06\x01", "out of range"),  # delta 791 from -1: index 790
        (b"\x01\xbd\x05\x01\x64\x01", "out of range"),  # index 700, then 800
        (b"\x01\x01" + b"\xff" * 10 + b"\x01", "oversized"),
    ],
)
def test_decode_rejects_malformed_blobs(blob, message):
    with pytest.raises(ValueError, match=message):
        Histogram.decode(blob)
    with pytest.raises(ValueError, match=message):
        merge_encoded([Histogram().encode(), blob])


@given(
    values=st.lists(st.floats(allow_nan=False), max_size=300),
    repeat=st.integers(1, 70_000),
)
def test_the_writers_blob_codec_is_byte_identical_to_the_histogram_module(values, repeat):
    hist = Histogram()
    for v in values:
        hist.add(v, repeat)  # counts past one varint byte too
    counts = dict(hist.buckets())
    assert encode_counts(counts) == hist.encode()
    assert decode_counts(hist.encode()) == counts
    assert decode_counts(b"") == {}
    assert hist.encode() == reference_encoding(counts)


def test_decode_counts_accepts_memoryview_none_and_a_bare_version_byte():
    blob = Histogram.from_values([3.0, 300.0, 3000.0, 3000.0]).encode()
    assert decode_counts(memoryview(blob)) == decode_counts(blob)
    assert sum(decode_counts(bytearray(blob)).values()) == 4
    assert decode_counts(None) == {} == decode_counts(EMPTY_ENCODING)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x02", "version"),
        (b"\x01\x05", "truncated"),
        (b"\x01\x85", "truncated"),
        (b"\x01\x05\x81", "truncated"),
        (b"\x01\x80\x00\x01", "non-minimal"),
        (b"\x01\x97\x06\x01", "out of range"),  # delta 791 from -1: index 790
        (b"\x01\xbd\x05\x01\x64\x01", "out of range"),  # index 700, then 800
        (b"\x01\x01" + b"\xff" * 10 + b"\x01", "oversized"),
    ],
)
def test_decode_counts_rejects_malformed_blobs(blob, message):
    with pytest.raises(ValueError, match=message):
        decode_counts(blob)


@given(st.binary(max_size=40))
@example(b"\x05\x81\x01\x01\x82\x02")  # two-byte delta and count
def test_decode_counts_agrees_with_decode_on_any_blob(blob):
    blob = b"\x01" + blob
    try:
        counts = decode_counts(blob)
    except ValueError:
        with pytest.raises(ValueError):
            Histogram.decode(blob)
        return
    try:
        hist = Histogram.decode(blob)
    except ValueError:
        return  # a repeated bucket or a zero count, which only decode checks
    assert counts == dict(hist.buckets())


@given(latency_lists)
def test_encoding_round_trips_exactly(values):
    hist = Histogram.from_values(values)
    blob = hist.encode()
    decoded = Histogram.decode(blob)
    assert decoded == hist
    assert decoded.total == hist.total
    assert decoded.buckets() == hist.buckets()
    assert decoded.encode() == blob


@given(st.binary(max_size=40))
def test_any_blob_either_is_rejected_or_reencodes_to_itself(blob):
    blob = b"\x01" + blob
    try:
        hist = Histogram.decode(blob)
    except ValueError:
        return
    assert hist.encode() == blob
    assert hist.total == sum(count for _, count in hist.buckets())


# --- merging --------------------------------------------------------------------------------


@given(latency_lists, latency_lists, latency_lists)
def test_merge_is_associative_and_commutative(xs, ys, zs):
    a, b, c = (Histogram.from_values(v) for v in (xs, ys, zs))
    assert merged(merged(a, b), c).encode() == merged(a, merged(b, c)).encode()
    assert merged(a, b).encode() == merged(b, a).encode()
    assert merged(a, b).total == a.total + b.total


@given(st.lists(latency_lists, max_size=12))
def test_merged_minutes_encode_the_same_as_the_hour_built_directly(minutes):
    hour_values = [v for minute in minutes for v in minute]
    direct = Histogram.from_values(hour_values)
    minute_hists = [Histogram.from_values(m) for m in minutes]

    by_merge = merged(*minute_hists)
    assert by_merge.encode() == direct.encode()
    assert by_merge.total == len(hour_values)
    if hour_values:
        assert (by_merge.min_ms, by_merge.max_ms) == (min(hour_values), max(hour_values))

    from_blobs = merge_encoded(h.encode() for h in minute_hists)
    assert from_blobs.encode() == direct.encode()
    assert from_blobs.total == direct.total


@given(st.lists(latency_lists, min_size=1, max_size=6))
def test_merge_encoded_of_minutes_matches_merging_hour_blobs(minutes):
    # minute -> hour -> day must equal minute -> day.
    minute_blobs = [Histogram.from_values(m).encode() for m in minutes]
    half = len(minute_blobs) // 2
    hours = [merge_encoded(minute_blobs[:half]), merge_encoded(minute_blobs[half:])]
    day = merge_encoded(h.encode() for h in hours)
    assert day == merge_encoded(minute_blobs)


def test_merge_encoded_handles_thousands_of_blobs():
    minute = Histogram.from_values([5.0, 120.0, 130.0, 300.0, 30_000.0]).encode()
    day = merge_encoded([minute] * 1440)
    assert day.total == 5 * 1440
    expected = Histogram()
    for ms in (5.0, 120.0, 130.0, 300.0, 30_000.0):
        expected.add(ms, count=1440)
    assert day == expected


@given(st.lists(in_range, min_size=2, max_size=100), percentile_q)
def test_percentile_of_a_merge_matches_the_direct_percentile(values, q):
    half = len(values) // 2
    direct = Histogram.from_values(values)
    combined = merged(Histogram.from_values(values[:half]), Histogram.from_values(values[half:]))
    assert combined.percentile(q) == direct.percentile(q)


@given(st.lists(latency_lists, max_size=8), st.lists(percentile_q, min_size=1, max_size=4))
def test_percentiles_straight_from_blobs_match_those_of_the_merged_histogram(minutes, qs):
    # The query layer reads percentiles off the blobs without building the merge.
    blobs = [Histogram.from_values(m).encode() for m in minutes] + [b"", None]
    values = [v for minute in minutes for v in minute]
    clamps = [(None, None)] + ([(min(values), max(values))] if values else [])
    for lo, hi in clamps:
        assert percentiles_encoded(blobs, qs, lo, hi) == merge_encoded(blobs).percentiles(
            qs, lo, hi
        )


@given(
    st.dictionaries(
        st.integers(0, BUCKET_COUNT - 1),
        st.integers(1, 127) | st.integers(128, 16_383) | st.integers(16_384, 10**9),
        min_size=1,
        max_size=60,
    ),
    st.lists(percentile_q, min_size=1, max_size=4),
)
@example({0: 1}, [50])
@example({789: 16_383, 0: 128}, [0, 100])
@example({3: 16_384}, [99])
def test_one_blob_of_any_shape_reads_the_same_as_the_histogram_it_encodes(counts, qs):
    # One- and two-byte varints are read by pattern, longer ones the long way; a single
    # blob's percentiles skip the dense merge. All must agree with the histogram itself.
    hist = Histogram()
    for index, count in counts.items():
        hist.add(bucket_value(index), count)
    blob = hist.encode()
    assert Histogram.decode(blob) == hist
    assert merge_encoded([blob]).total == sum(counts.values())
    assert decode_counts(blob) == counts
    assert percentiles_encoded([blob, b""], qs) == hist.percentiles(qs, None, None)
    assert percentiles_encoded([memoryview(blob)], qs, 1.0, 100.0) == hist.percentiles(
        qs, 1.0, 100.0
    )


def test_percentiles_straight_from_blobs_reject_what_decode_rejects():
    good = Histogram.from_values([5.0, 120.0]).encode()
    with pytest.raises(ValueError, match="truncated"):
        percentiles_encoded([good, good[:-1]], (50,))
    with pytest.raises(ValueError):
        percentiles_encoded([good], (101,))
