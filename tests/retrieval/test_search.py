import json

import pytest

from retrieval.collection import Collection
from retrieval.keywords import index_text, match_query, query_terms
from retrieval.search import fuse, search
from tests.helpers import hearth

DOCS = {
    "python.md": "# Python\n\nThe list.sort method sorts a list in place and returns None.\n",
    "rust.md": "# Rust\n\nOwnership rules decide when memory is freed in Rust programs.\n",
    "tokyo.txt": "東京は日本の首都です。人口は約1400万人です。\n",
    "bread.txt": "Sourdough bread rises slowly because wild yeast ferments the dough overnight.\n",
}


@pytest.fixture
def collection(tmp_path, embedder):
    folder = tmp_path / "d"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    c = Collection("s", embedder=embedder)
    c.ingest([folder])
    return c


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_each_mode_finds_the_right_document(collection, mode):
    hits = search(collection, "what does sort return", k=2, mode=mode)
    assert hits[0].chunk.path.endswith("python.md")


def test_dense_finds_paraphrase_without_shared_words(collection):
    hits = search(collection, "fermentation of loaves", k=1, mode="dense")
    assert hits[0].chunk.path.endswith("bread.txt")


def test_keyword_search_finds_cjk_text(collection):
    hits = search(collection, "首都", k=1, mode="keyword")
    assert hits and hits[0].chunk.path.endswith("tokyo.txt")
    assert index_text("東京都") == " 東京 京都 "


def test_query_terms_drop_stopwords():
    assert query_terms("What is the capital of France?") == ["capital", "france"]
    assert match_query(["a\"b", "c"]) == '"a""b" OR "c"'


def test_fusion_keeps_score_gaps():
    dense = [(1, 0.9), (2, 0.5), (3, 0.1)]
    keyword = [(2, 10.0), (3, 9.0)]
    fused = dict(fuse(dense, keyword, keyword_weight=0.5))
    assert fused[1] == pytest.approx(0.5)  # dense best, absent from keyword
    assert fused[2] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)
    assert fused[3] == pytest.approx(0.0)
    assert [i for i, _ in fuse(dense, keyword, 0.5)] == [2, 1, 3]


def test_search_cli_json_shape(collection, hearth_home):
    hits = json.loads(hearth("search", "sourdough yeast", "--collection", "s", "-k", "2", "--json").stdout)
    assert [h["rank"] for h in hits] == [1, 2]
    assert set(hits[0]) == {"rank", "score", "path", "line", "page", "heading", "text", "chunk_id"}
    assert hits[0]["path"].endswith("bread.txt") and hits[0]["line"] == 1
