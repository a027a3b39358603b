"""The missing-clip table of a recipe's ``report.txt`` (``avtag prepare dcase17`` / ``audioset``):
missing / total clips per class (rows) and split (columns), then the clip totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def missing_clip_table(
    classes: Sequence[str],
    per_class: Mapping[str, Sequence[tuple[int, int]]],
    totals: Mapping[str, tuple[int, int, int, int]],
) -> list[str]:
    """Plain-text lines of the table, columns aligned.

    ``per_class[split][c]`` is ``(missing, total)`` clips of class c; ``totals[split]`` is
    ``(missing, total, unreadable, packed)`` clips of the split."""
    splits = list(per_class)
    header = ["class"] + [f"{split} missing/total" for split in splits]
    rows = [[name] + [f"{per_class[s][c][0]}/{per_class[s][c][1]}" for s in splits] for c, name in enumerate(classes)]
    rows.append(["all clips"] + [f"{totals[s][0]}/{totals[s][1]}" for s in splits])
    rows.append(["unreadable"] + [str(totals[s][2]) for s in splits])
    rows.append(["packed"] + [str(totals[s][3]) for s in splits])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return [line(header), line(["-" * w for w in widths])] + [line(row) for row in rows]


__all__ = ["missing_clip_table"]
