"""Read files into plain text: text, Markdown, reStructuredText, HTML, PDF and source code here;
Word, EPUB, OpenDocument, notebooks and tables in `office.py`."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from assistant.files import not_regular

log = logging.getLogger(__name__)
logging.getLogger("pypdf").setLevel(logging.ERROR)  # a damaged PDF is one skip line, not pypdf's warnings

MAX_FILE_BYTES = 20 * 1024 * 1024
HTML_EXT = {".html", ".htm", ".xhtml"}
PDF_EXT = {".pdf"}
MARKDOWN_EXT = {".md", ".markdown", ".mdx"}
RST_EXT = {".rst", ".rest"}
# extension -> kind for the formats in office.py
OFFICE_KINDS = {".docx": "docx", ".epub": "epub", ".odt": "odt", ".ipynb": "notebook", ".csv": "table",
                ".tsv": "table"}
# kinds whose text marks its headings in Markdown (or reStructuredText), for the chunker
HEADED_KINDS = {"markdown", "rst", "html", "text", "docx", "epub", "odt", "notebook"}
CODE_EXT = {
    ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".go", ".rb",
    ".php", ".sh", ".bash", ".zsh", ".sql", ".kt", ".swift", ".scala", ".lua", ".pl", ".r", ".m", ".cs",
    ".toml", ".yaml", ".yml", ".json", ".ini", ".cfg", ".css", ".xml", ".tex",
}


class SkipFile(Exception):
    """The file cannot be ingested; the message is a one-line reason."""


@dataclass
class LoadedDocument:
    """A file as text. For PDFs `page_starts[i]` is the offset where page i+1 begins."""

    path: Path
    kind: str  # "text", "markdown", "rst", "html", "pdf", "code", or one of OFFICE_KINDS' values
    title: str
    text: str
    page_starts: list[int] = field(default_factory=list)


def kind_of(path: Path) -> str:
    """The loader a file name selects."""
    ext = path.suffix.lower()
    if ext in OFFICE_KINDS:
        return OFFICE_KINDS[ext]
    if ext in HTML_EXT:
        return "html"
    if ext in PDF_EXT:
        return "pdf"
    if ext in MARKDOWN_EXT:
        return "markdown"
    if ext in RST_EXT:
        return "rst"
    if ext in CODE_EXT:
        return "code"
    return "text"


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else the encoding charset-normalizer detects."""
    if b"\x00" in data[:8192]:
        raise SkipFile("binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise SkipFile("not text in any known encoding")
    # Single-byte Latin code pages are often indistinguishable on short texts; when Windows-1252
    # (the most common legacy encoding) reads the bytes about as cleanly, prefer it.
    for match in matches:
        if match.encoding == "cp1252" and match.percent_chaos <= best.percent_chaos + 1.0:
            return str(match)
    return str(best)


def _first_heading(text: str, kind: str) -> str | None:
    if kind == "markdown":
        m = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.M)
        return m.group(1) if m else None
    if kind == "rst":
        m = re.search(r"^(?:[=\-~^\"'`#*+]{3,}\n)?(\S.*?)\s*\n([=\-~^\"'`#*+])\2{2,}\s*$", text, re.M)
        return m.group(1) if m else None
    return None


def html_text(data: bytes) -> tuple[str, str | None]:
    """Visible text of an HTML page with its headings as Markdown headings, and its <title>."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(data), "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else None
    if title_tag:
        title_tag.decompose()
    # Headings become Markdown headings so the chunker sees the document's structure.
    for tag in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        level = int(tag.name[1])
        tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    for tag in soup.find_all(["p", "div", "li", "tr", "pre", "blockquote", "section", "article", "br", "table"]):
        tag.insert_after("\n\n" if tag.name != "br" else "\n")
    text = soup.get_text()
    text = re.sub(r"[ \t\r\f\v]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text, title


def _pdf(path: Path) -> tuple[str, list[int], str | None]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise SkipFile("encrypted PDF")
        parts, starts, offset = [], [], 0
        for page in reader.pages:
            text = (page.extract_text() or "").strip()
            starts.append(offset)
            parts.append(text)
            offset += len(text) + 2
        meta_title = reader.metadata.title if reader.metadata else None
    except SkipFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise SkipFile(f"unreadable PDF ({exc})") from exc
    return "\n\n".join(parts), starts, meta_title


def load(path: Path, max_bytes: int = MAX_FILE_BYTES) -> LoadedDocument:
    """Read one file as text, or raise SkipFile with the reason."""
    if (why := not_regular(path)) is not None or path.is_dir():
        raise SkipFile(why or "a folder")
    size = path.stat().st_size
    if size > max_bytes:
        raise SkipFile(f"larger than the {max_bytes // (1024 * 1024)} MiB limit ({size // (1024 * 1024)} MiB)")
    if size == 0:
        raise SkipFile("empty file")
    kind = kind_of(path)
    page_starts: list[int] = []
    title = None
    if kind == "pdf":
        text, page_starts, title = _pdf(path)
    elif kind in ("docx", "epub", "odt", "notebook"):
        from retrieval import office

        text, title = getattr(office, kind)(path)
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SkipFile(f"unreadable ({exc.strerror})") from exc
        if kind == "html":
            text, title = html_text(data)
        elif kind == "table":
            from retrieval.office import table

            text, title = table(path, data)
        else:
            text = decode_text(data)
            title = _first_heading(text, kind)
    if not text.strip():
        raise SkipFile("no text content")
    return LoadedDocument(path=path, kind=kind, title=(title or path.stem).strip(), text=text,
                          page_starts=page_starts)
