"""The per-epoch CSV log of a training run (``log.csv`` in the output folder)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

COLUMNS = (
    "epoch",
    "steps",
    "lr",
    "train_loss",
    "valid_loss",
    "valid_dice",
    "valid_dice_global",
    "valid_dice_volume",
    "valid_iou",
    "best_dice",
    "is_best",
    "epochs_without_improvement",
    "seconds",
)


class CsvLog:
    """Append one row per epoch; on resume, rows after the resumed epoch are dropped."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def truncate_after(self, epoch: int) -> None:
        """Keep the rows of epochs up to ``epoch`` (after a resume from that epoch)."""
        rows = [row for row in self.read() if int(row["epoch"]) <= epoch]
        self._write(rows, mode="w")

    def append(self, row: Mapping[str, object]) -> None:
        self._write([row], mode="a")

    def _write(self, rows: list[Mapping[str, object]], mode: str) -> None:
        new_file = mode == "w" or not self.path.is_file()
        with self.path.open("w" if new_file else "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            for row in rows:
                writer.writerow({key: _format(row.get(key, "")) for key in COLUMNS})


def _format(value: object) -> object:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value
