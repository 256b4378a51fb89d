"""Where a value sits in its file, so that a message names the line a person would open."""

from __future__ import annotations

from dataclasses import dataclass

from monolith.data.sources import SourceFile


@dataclass(frozen=True)
class Where:
    """A file and where its data rows start, so a message names the line a person would open."""

    file: SourceFile
    first_data_line: int | None  # None: Parquet, which has rows, not lines

    def row(self, index: int) -> str:
        """Where data row ``index`` (0-based) sits in the file."""
        if self.first_data_line is None:
            return f"row {index + 1}"
        return f"line {index + self.first_data_line} (data row {index + 1})"

    def __str__(self) -> str:
        return str(self.file)
