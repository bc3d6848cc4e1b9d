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


def test_sentence_less_text_is_chunked_in_linear_work():
    # the tokenizer's work, counted: windows were once re-tokenized from their start to the end
    # of the text on every probe, so doubling a 10 MB one-line file quadrupled the time
    tokenized = []

    def counting(text: str) -> int:
        tokenized.append(len(text))
        return len(text.split())

    def work(n_words: int) -> int:
        tokenized.clear()
        chunks = chunk_document(_doc("lorem " * n_words, kind="text"), counting, target_tokens=50)
        assert max(words(c.text) for c in chunks) <= 50
        return sum(tokenized)

    small, big = work(20_000), work(40_000)
    assert big <= 2.2 * small


def test_no_chunk_exceeds_the_budget_whatever_the_input():
    import json

    from retrieval.chunker import MAX_CHARS_PER_TOKEN

    def wordpiece_like(text: str) -> int:  # a run without spaces is one (unknown) token; CJK is a token a character
        return sum(len(w) if any("\u4e00" <= ch <= "\u9fff" for ch in w) else 1 for w in text.split())

    minified = json.dumps([{"id": i, "name": f"item{i}", "tags": ["a", "b"]} for i in range(3000)],
                          separators=(",", ":"))
    cjk = "東京は日本の首都です" * 500
    for text in (minified, cjk, "short words then " + "x" * 5000 + " and more words"):
        chunks = chunk_document(_doc(text, kind="text"), wordpiece_like, target_tokens=40)
        assert all(wordpiece_like(c.text) <= 40 and len(c.text) <= 40 * MAX_CHARS_PER_TOKEN for c in chunks)
        assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")  # nothing lost
