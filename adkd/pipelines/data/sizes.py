"""Short summaries of many image sizes: how many, their range and the most common ones."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def size_counts(sizes: Iterable[tuple[int, int]]) -> Counter:
    """``(width, height)`` -> number of images."""
    return Counter((int(w), int(h)) for w, h in sizes)


def fmt(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def size_range(counts: Counter) -> str:
    """Component-wise range, e.g. ``500x1235..500x1285``; one size when they are all equal."""
    if not counts:
        return ""
    ws = [w for w, _ in counts]
    hs = [h for _, h in counts]
    low, high = (min(ws), min(hs)), (max(ws), max(hs))
    return fmt(low) if low == high else f"{fmt(low)}..{fmt(high)}"


def most_common(counts: Counter, n: int = 5) -> list[tuple[str, int]]:
    """The ``n`` most common sizes with their counts, ties broken by size."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(fmt(size), k) for size, k in ranked[:n]]


def summary(counts: Counter, n: int = 5) -> str:
    """One line: ``45 sizes, 500x1235..500x1285; most common 500x1240 (30), ...``."""
    if not counts:
        return "no decodable image"
    if len(counts) == 1:
        return f"1 size, {size_range(counts)}"
    common = ", ".join(f"{s} ({k})" for s, k in most_common(counts, n))
    more = f", +{len(counts) - n} more" if len(counts) > n else ""
    return f"{len(counts)} sizes, {size_range(counts)}; most common {common}{more}"
