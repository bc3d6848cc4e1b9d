from pathlib import Path

import pytest

from retrieval.chunker import chunk_document
from retrieval.loaders import SkipFile, load
from tests.conftest import write_pdf


def words(text: str) -> int:
    return len(text.split())


def test_markdown_title_and_text(tmp_path):
    f = tmp_path / "notes.md"
    f.write_text("# Garden\n\nTomatoes need sun.\n")
    doc = load(f)
    assert (doc.kind, doc.title, doc.text) == ("markdown", "Garden", "# Garden\n\nTomatoes need sun.\n")


def test_rst_title(tmp_path):
    f = tmp_path / "guide.rst"
    f.write_text("User guide\n==========\n\nIntro text.\n")
    assert load(f).title == "User guide"


def test_html_keeps_text_drops_markup_and_scripts(tmp_path):
    f = tmp_path / "page.html"
    f.write_text("<html><head><title>Manual</title><style>p{color:red}</style></head><body>"
                 "<h1>Install</h1><p>Run <b>make</b> now.</p><script>alert('x')</script>"
                 "<h2>Use</h2><p>Type hearth.</p></body></html>")
    doc = load(f)
    assert doc.title == "Manual"
    assert "alert" not in doc.text and "color" not in doc.text and "<" not in doc.text
    assert doc.text == "# Install\n\nRun make now.\n\n## Use\n\nType hearth."
    chunks = chunk_document(doc, words)
    assert [c.heading for c in chunks] == ["Install", "Install > Use"]


def test_pdf_pages_and_offsets(tmp_path):
    f = write_pdf(tmp_path / "paper.pdf", ["First page about apples.", "Second page about pears."])
    doc = load(f)
    assert doc.kind == "pdf" and len(doc.page_starts) == 2
    chunks = chunk_document(doc, words, target_tokens=5)
    assert [(c.page, c.text) for c in chunks] == [(1, "First page about apples."), (2, "Second page about pears.")]
    for c in chunks:
        assert doc.text[c.start : c.end] == c.text


def test_source_code_is_text(tmp_path):
    f = tmp_path / "tool.py"
    f.write_text("def add(a, b):\n    return a + b\n")
    doc = load(f)
    assert doc.kind == "code" and "return a + b" in doc.text


def test_latin1_file_is_decoded(tmp_path):
    f = tmp_path / "old.txt"
    f.write_bytes("Le café était très bon, déjà vu à Noël.".encode("latin-1"))
    assert load(f).text == "Le café était très bon, déjà vu à Noël."


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("image.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary"),
        ("empty.txt", b"", "empty"),
        ("blank.md", b"   \n\n  ", "no text"),
    ],
)
def test_bad_inputs_are_skipped_with_a_reason(tmp_path, name, data, reason):
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(SkipFile, match=reason):
        load(f)


def test_oversized_file_is_skipped(tmp_path):
    f = tmp_path / "big.txt"
    f.write_text("x" * 2000)
    with pytest.raises(SkipFile, match="larger than"):
        load(f, max_bytes=1000)


def test_corrupt_pdf_is_skipped(tmp_path):
    f = tmp_path / "broken.pdf"
    f.write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(SkipFile, match="PDF"):
        load(f)


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    f = tmp_path / "secret.txt"
    f.write_text("classified")
    real = Path.read_bytes

    def deny(self):
        if self.name == "secret.txt":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(SkipFile, match="unreadable"):
        load(f)
