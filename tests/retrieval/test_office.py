"""Word, EPUB, OpenDocument, notebook and table files, written here with the libraries that make
them: their text, their headings as headings, and a one-line reason for each bad one."""

import zipfile

import pytest

from retrieval.chunker import chunk_document
from retrieval.loaders import SkipFile, load
from retrieval.office import OLE_MAGIC


def words(text: str) -> int:
    return len(text.split())


def write_docx(path):
    import docx

    d = docx.Document()
    d.core_properties.title = "Garden notes"
    d.add_heading("Tomatoes", level=1)
    d.add_paragraph("Tomatoes need six hours of sun.")
    d.add_heading("Watering", level=2)
    d.add_paragraph("Water them at the roots in the morning.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "plant", "spacing"
    table.cell(1, 0).text, table.cell(1, 1).text = "tomato", "60 cm"
    d.save(path)
    return path


def write_epub(path):
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("hearth-test")
    book.set_title("The Heron")
    book.set_language("en")
    chapters = []
    for i, (title, body) in enumerate([("Dawn at the pond", "The heron waits in the reeds."),
                                        ("The catch", "At noon it caught a silver fish.")], 1):
        chapter = epub.EpubHtml(title=title, file_name=f"chap{i}.xhtml", lang="en")
        chapter.content = f"<html><body><p>{body}</p></body></html>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = chapters
    epub.write_epub(str(path), book)
    return path


def write_odt(path):
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    doc = OpenDocumentText()
    doc.text.addElement(H(outlinelevel=1, text="Bees"))
    doc.text.addElement(P(text="Bees visit the lavender in July."))
    doc.text.addElement(H(outlinelevel=2, text="Hives"))
    doc.text.addElement(P(text="The hive stands by the south wall."))
    doc.save(str(path))
    return path


def write_notebook(path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Otter counts\n\nWe counted otters each week."),
                nbformat.v4.new_code_cell("# not a heading\ntotal = sum(counts)"),
                nbformat.v4.new_markdown_cell("## Result\n\nNine otters in May.")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="SECRET OUTPUT")]
    nbformat.write(nb, str(path))
    return path


def test_docx_keeps_headings_paragraphs_and_tables(tmp_path):
    doc = load(write_docx(tmp_path / "garden.docx"))
    assert doc.kind == "docx" and doc.title == "Garden notes"
    assert doc.text.split("\n\n") == ["# Tomatoes", "Tomatoes need six hours of sun.", "## Watering",
                                      "Water them at the roots in the morning.", "plant | spacing", "tomato | 60 cm"]
    chunks = chunk_document(doc, words, target_tokens=12)
    assert [c.heading for c in chunks if "roots" in c.text] == ["Tomatoes > Watering"]


def test_epub_chapters_are_sections_titled_from_the_table_of_contents(tmp_path):
    doc = load(write_epub(tmp_path / "heron.epub"))
    assert doc.kind == "epub" and doc.title == "The Heron"
    chunks = chunk_document(doc, words, target_tokens=10)
    assert {c.heading: c.text.split("\n")[-1] for c in chunks} == {
        "Dawn at the pond": "The heron waits in the reeds.", "The catch": "At noon it caught a silver fish."}


def test_odt_headings_and_paragraphs(tmp_path):
    doc = load(write_odt(tmp_path / "bees.odt"))
    assert doc.kind == "odt"
    assert doc.text.split("\n\n") == ["# Bees", "Bees visit the lavender in July.", "## Hives",
                                      "The hive stands by the south wall."]


def test_notebook_markdown_and_code_without_outputs(tmp_path):
    doc = load(write_notebook(tmp_path / "otters.ipynb"))
    assert doc.kind == "notebook" and doc.title == "Otter counts"
    assert "SECRET OUTPUT" not in doc.text and "total = sum(counts)" in doc.text
    headings = {c.heading for c in chunk_document(doc, words, target_tokens=8)}
    assert headings == {"Otter counts", "Otter counts > Result"}  # the code's "# not a heading" is not one


@pytest.mark.parametrize("name, data", [
    ("plants.csv", "plant,spacing,sun\ntomato,60 cm,full\n\nbasil,,partial\n"),
    ("plants.tsv", "plant\tspacing\tsun\ntomato\t60 cm\tfull\n\nbasil\t\tpartial\n"),
])
def test_table_rows_carry_their_header(tmp_path, name, data):
    f = tmp_path / name
    f.write_text(data)
    doc = load(f)
    assert doc.kind == "table"
    assert doc.text.split("\n\n") == ["plant: tomato; spacing: 60 cm; sun: full", "plant: basil; sun: partial"]


@pytest.mark.parametrize("name", ["bad.docx", "bad.epub", "bad.odt"])
def test_corrupt_and_encrypted_packages_are_skipped_in_one_line(tmp_path, name):
    corrupt = tmp_path / name
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(SkipFile, match="^unreadable"):
        load(corrupt)
    encrypted = tmp_path / f"locked-{name}"
    if name.endswith(".docx"):  # Office encrypts a .docx into an OLE container
        encrypted.write_bytes(OLE_MAGIC + bytes(512))
    else:
        with zipfile.ZipFile(encrypted, "w") as z:
            z.writestr("mimetype", "application/epub+zip")
            z.writestr("META-INF/encryption.xml", "<encryption/>")
            z.writestr("META-INF/manifest.xml", "<manifest><file-entry><encryption-data/></file-entry></manifest>")
    with pytest.raises(SkipFile, match="encrypted"):
        load(encrypted)


@pytest.mark.parametrize("name, data, reason", [
    ("empty.docx", b"", "empty file"),
    ("broken.ipynb", b"{not json", "unreadable notebook"),
    ("header-only.csv", b"plant,spacing\n", "no text content"),
])
def test_empty_and_broken_inputs(tmp_path, name, data, reason):
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(SkipFile, match=reason):
        load(f)
