"""A small HTML reader for the tests of the self-contained report pages (``cai eval`` and ``cai judge-eval``)."""

from __future__ import annotations

from html.parser import HTMLParser


class Page(HTMLParser):
    """The parts of a page the tests look at: tag balance (of the ``checked`` tags), tags and their
    attributes, table cells by table id, the text of ``<title>`` elements and of the script."""

    def __init__(self, checked: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.checked = checked
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.table: str | None = None
        self.cell: list[str] | None = None
        self.titles: list[str] = []
        self.title: list[str] | None = None
        self.script = ""
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))
        if tag in self.checked:
            self.stack.append(tag)
        if tag == "table":
            self.table = dict(attrs).get("id") or f"table{len(self.tables)}"
            self.tables[self.table] = []
        elif tag == "tr" and self.table:
            self.tables[self.table].append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "title":
            self.title = []
        self.in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.table:
            self.tables[self.table][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table":
            self.table = None
        elif tag == "title" and self.title is not None:
            self.titles.append("".join(self.title))
            self.title = None
        elif tag == "script":
            self.in_script = False
        if tag not in self.checked:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if self.title is not None:
            self.title.append(data)
        if self.in_script:
            self.script += data

    def tag(self, name: str, **attrs: str) -> list[dict[str, str | None]]:
        """The attributes of every ``name`` tag that has all of ``attrs``."""
        return [a for t, a in self.starts if t == name and all(a.get(k) == v for k, v in attrs.items())]


def parse(page: str, checked: frozenset[str]) -> Page:
    """Read a page, asserting that its ``checked`` tags are balanced."""
    parser = Page(checked)
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser
