"""Loaders for packaged document formats: Word (.docx), EPUB, OpenDocument text (.odt), Jupyter
notebooks (.ipynb) and tables (.csv, .tsv). Each returns (text, title) with headings written as
Markdown headings, so the chunker sees the document's structure; a file that cannot be read raises
SkipFile with a one-line reason."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

from retrieval.loaders import SkipFile, decode_text, html_text

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # encrypted OOXML (and legacy .doc) files are OLE containers


def _zip(path: Path, what: str) -> zipfile.ZipFile:
    with open(path, "rb") as f:
        if f.read(8) == OLE_MAGIC:
            raise SkipFile(f"encrypted or legacy-format {what} (not readable without its password)")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SkipFile(f"unreadable {what} ({exc})") from None


def docx(path: Path) -> tuple[str, str | None]:
    import docx as python_docx

    _zip(path, "Word document").close()
    try:
        document = python_docx.Document(str(path))
    except Exception as exc:  # python-docx raises a variety of package and XML errors
        raise SkipFile(f"unreadable Word document ({type(exc).__name__})") from None
    parts, title = [], document.core_properties.title or None
    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = para.style.name if para.style is not None else ""
        level = re.match(r"Heading (\d)", style or "")
        if style == "Title":
            title = title or text
            parts.append(f"# {text}")
        elif level:
            parts.append(f"{'#' * int(level.group(1))} {text}")
        else:
            parts.append(text)
    for table in document.tables:
        parts.extend(" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows)
    return "\n\n".join(parts), title


def epub(path: Path) -> tuple[str, str | None]:
    """Each chapter (spine item) as a top-level section headed by its title from the table of contents."""
    from ebooklib import ITEM_DOCUMENT
    from ebooklib import epub as ebook

    with _zip(path, "EPUB") as archive:
        if "META-INF/encryption.xml" in archive.namelist():
            raise SkipFile("encrypted EPUB (DRM)")
    try:
        book = ebook.read_epub(str(path), {"ignore_ncx": False})
    except Exception as exc:  # ebooklib raises bare Exceptions, KeyErrors and XML errors
        raise SkipFile(f"unreadable EPUB ({type(exc).__name__})") from None
    toc_titles = {}

    def walk(entries) -> None:
        for entry in entries:
            if isinstance(entry, tuple):
                entry, children = entry
                walk(children)
            href = getattr(entry, "href", None)
            if href:
                toc_titles.setdefault(href.split("#")[0], entry.title)

    walk(book.toc)
    parts = []
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ITEM_DOCUMENT:
            continue
        text, html_title = html_text(item.get_content())
        if not text.strip():
            continue
        chapter = toc_titles.get(item.get_name()) or html_title
        parts.append(text if text.startswith("#") or not chapter else f"# {chapter}\n\n{text}")
    titles = book.get_metadata("DC", "title")
    return "\n\n".join(parts), titles[0][0] if titles else None


def odt(path: Path) -> tuple[str, str | None]:
    from odf import teletype
    from odf.namespaces import TEXTNS
    from odf.opendocument import load

    with _zip(path, "OpenDocument file") as archive:
        try:
            manifest = archive.read("META-INF/manifest.xml")
        except KeyError:
            manifest = b""
        if b"encryption-data" in manifest:
            raise SkipFile("encrypted OpenDocument file (not readable without its password)")
    try:
        document = load(str(path))
    except Exception as exc:  # odfpy raises XML and zip errors
        raise SkipFile(f"unreadable OpenDocument file ({type(exc).__name__})") from None
    parts = []

    def walk(node) -> None:
        for child in node.childNodes:
            if child.qname == (TEXTNS, "h"):
                level = int(child.getAttribute("outlinelevel") or 1)
                parts.append(f"{'#' * min(level, 6)} {teletype.extractText(child).strip()}")
            elif child.qname == (TEXTNS, "p"):
                text = teletype.extractText(child).strip()
                if text:
                    parts.append(text)
            elif child.nodeType == child.ELEMENT_NODE:
                walk(child)

    walk(document.text)
    titles = [teletype.extractText(t) for t in document.meta.childNodes if t.qname[1] == "title"]
    return "\n\n".join(parts), titles[0] if titles else None


def notebook(path: Path) -> tuple[str, str | None]:
    """Markdown cells as they are, code cells fenced (so a `# comment` is not a heading); outputs left out."""
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # nbformat raises NotJSONError, validation and version errors
        raise SkipFile(f"unreadable notebook ({type(exc).__name__})") from None
    language = nb.metadata.get("language_info", {}).get("name", "")
    parts = []
    for cell in nb.cells:
        source = cell.get("source", "").strip()
        if not source:
            continue
        if cell.cell_type == "markdown":
            parts.append(source)
        elif cell.cell_type == "code":
            parts.append(f"```{language}\n{source}\n```")
    text = "\n\n".join(parts)
    heading = re.search(r"^#\s+(.+?)\s*$", text, re.M)
    return text, heading.group(1) if heading else None


def table(path: Path, data: bytes) -> tuple[str, str | None]:
    """Each row as one paragraph of "column: value" pairs, named by the header row."""
    text = decode_text(data)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise SkipFile(f"unreadable table ({exc})") from None
    if len(rows) < 2:
        return "", None
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    lines = []
    for row in rows[1:]:
        pairs = [f"{header[i] if i < len(header) else f'column {i + 1}'}: {value.strip()}"
                 for i, value in enumerate(row) if value.strip()]
        lines.append("; ".join(pairs))
    return "\n\n".join(lines), None
