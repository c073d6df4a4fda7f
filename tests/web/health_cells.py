"""Read the dashboard's health grid back from its HTML: each cell's part, name, level and
text, as an operator sees them."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser


@dataclass(frozen=True)
class Cell:
    part: str
    name: str
    level: str
    text: str


class _CellParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[Cell] = []
        self._depth = 0
        self._current: dict[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if self._current is not None:
            if tag == "div":
                self._depth += 1
            return
        if tag == "div" and "cell" in found.get("class", "").split():
            self._current, self._depth, self._text = found, 1, []

    def handle_endtag(self, tag: str) -> None:
        if self._current is None or tag != "div":
            return
        self._depth -= 1
        if self._depth == 0:
            c = self._current
            text = " ".join(" ".join(self._text).split())
            self.cells.append(Cell(c["data-part"], c["data-name"], c["data-level"], text))
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)


def health_cells(page: str) -> dict[tuple[str, str], Cell]:
    parser = _CellParser()
    parser.feed(page)
    return {(c.part, c.name): c for c in parser.cells}


def of_part(page: str, part: str) -> list[Cell]:
    return [c for c in health_cells(page).values() if c.part == part]
