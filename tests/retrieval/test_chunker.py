from retrieval.chunker import Chunk, chunk_document, sentences
from retrieval.loaders import LoadedDocument


def words(text: str) -> int:
    return len(text.split())


def _doc(text, kind="markdown", title="Doc"):
    return LoadedDocument(path=None, kind=kind, title=title, text=text)


def test_heading_paths_offsets_and_lines():
    text = "# Guide\n\nIntro line.\n\n## Install\n\nRun make.\n\n### Linux\n\nUse apt.\n\n## Use\n\nType hearth.\n"
    chunks = chunk_document(_doc(text, title="Guide"), words)
    assert [(c.heading, c.text, c.line_start) for c in chunks] == [
        ("Guide", "Intro line.", 3),
        ("Guide > Install", "Run make.", 7),
        ("Guide > Install > Linux", "Use apt.", 11),
        ("Guide > Use", "Type hearth.", 15),
    ]
    for c in chunks:
        assert text[c.start : c.end] == c.text


def test_embed_text_carries_title_and_heading():
    chunk = Chunk("It returns None.", 0, 16, 1, 1, None, "API > close()", "Widget manual")
    assert chunk.embed_text == "Widget manual > API > close()\nIt returns None."
    same = Chunk("x", 0, 1, 1, 1, None, "Widget manual > API", "Widget manual")
    assert same.embed_text == "Widget manual > API\nx"


def test_rst_headings():
    text = "Title\n=====\n\nIntro.\n\nPart\n----\n\nBody.\n"
    chunks = chunk_document(_doc(text, kind="rst", title="Title"), words)
    assert [(c.heading, c.text) for c in chunks] == [("Title", "Intro."), ("Title > Part", "Body.")]


def test_headings_inside_code_fences_are_ignored():
    text = "# Real\n\n```\n# not a heading\n```\n"
    assert {c.heading for c in chunk_document(_doc(text), words)} == {"Real"}


def test_packing_respects_target_with_overlap():
    text = "\n\n".join(f"Sentence number {i} is here." for i in range(30))  # 5 words each
    chunks = chunk_document(_doc(text, kind="text"), words, target_tokens=20, overlap_tokens=5)
    assert all(words(c.text) <= 20 for c in chunks)
    assert chunks[0].text.endswith("number 3 is here.") and chunks[1].text.startswith("Sentence number 3 is")
    covered = " ".join(c.text for c in chunks)
    assert all(f"number {i} " in covered for i in range(30))


def test_long_paragraph_splits_at_sentences_then_words():
    long_sentence = " ".join(["word"] * 50) + "."
    text = "Short one. Another short one. " + long_sentence
    chunks = chunk_document(_doc(text, kind="text"), words, target_tokens=10, overlap_tokens=0)
    assert chunks[0].text == "Short one. Another short one."
    assert all(words(c.text) <= 10 for c in chunks)


def test_sentence_split_english_abbreviations_numbers_and_cjk():
    text = "Dr. Smith paid 3.50 dollars, e.g. for tea. It was good! 東京は首都です。大阪も大きい。Done?"
    parts = [text[a:b] for a, b in sentences(text)]
    assert parts == ["Dr. Smith paid 3.50 dollars, e.g. for tea.", "It was good!", "東京は首都です。",
                     "大阪も大きい。", "Done?"]
