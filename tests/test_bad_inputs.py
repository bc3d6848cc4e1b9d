"""A corpus of bad inputs, written by the tests, through every command that reads user files: no
traceback, one line per problem, a non-zero exit only when nothing useful was done, and every good
input processed."""

import os
import re

import pytest

from retrieval.chunker import DEFAULT_TARGET_TOKENS
from retrieval.collection import Collection
from tests.conftest import write_pdf
from tests.helpers import hearth

BAD_NAME = os.fsdecode(b"bad\xffname.txt")
# file -> the one reason ingest gives for skipping it
SKIPPED = {
    "empty.txt": "empty file",
    "binary.dat": "binary file (contains NUL bytes)",
    "corrupt.pdf": "unreadable PDF",
    "encrypted.pdf": "encrypted PDF",
    "pipe.fifo": "not a regular file (a FIFO)",
    "loopA": "symlink loop",
    "loopB": "symlink loop",
    BAD_NAME: "its name is not valid UTF-8",
}
READ = ["good.md", "latin1.txt", "huge_line.txt", "minified.json"]


@pytest.fixture
def corpus(tmp_path):
    from pypdf import PdfWriter

    root = tmp_path / "corpus"
    root.mkdir()
    (root / "good.md").write_text("# Otters\n\nOtters hold hands while they sleep.\n")
    (root / "empty.txt").write_text("")
    (root / "binary.dat").write_bytes(b"\x00\x01\x02\xff" * 200)
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage \x00\x01")
    plain = write_pdf(tmp_path / "plain.pdf", ["A page about beavers."])
    writer = PdfWriter()
    writer.append(str(plain))
    writer.encrypt("secret")
    writer.write(str(root / "encrypted.pdf"))
    (root / "latin1.txt").write_bytes("Le caf\xe9 est tr\xe8s bon, dit l'\xe9l\xe8ve. ".encode("latin-1") * 5)
    (root / BAD_NAME).write_text("a file whose name is not UTF-8")
    os.mkfifo(root / "pipe.fifo")
    os.symlink(root / "loopA", root / "loopB")
    os.symlink(root / "loopB", root / "loopA")
    (root / "huge_line.txt").write_text("word " * 6000)  # one 30 KB line, no sentence break
    (root / "minified.json").write_text('{"k":"' + "x" * 40_000 + '"}')  # no whitespace at all
    return root


def skip_lines(stderr: str) -> dict[str, str]:
    lines = [line for line in re.split(r"[\r\n]", stderr) if line.startswith("skipped ")]
    found = {}
    for line in lines:
        path, why = line[len("skipped "):].split(": ", 1)
        name = os.path.basename(path)
        assert name not in found, f"{name} reported twice"
        found[name] = why
    return found


def test_ingest_reads_every_good_file_and_skips_each_bad_one_in_one_line(corpus):
    # the folder, and bad paths named directly, and a good file named twice
    run = hearth("ingest", corpus, corpus / "pipe.fifo", corpus / "loopA", corpus / "good.md",
                 "--collection", "bad", "--json")
    assert "Traceback" not in run.stderr
    skipped = skip_lines(run.stderr)
    shown = {"bad\ufffdname.txt" if name == BAD_NAME else name: why for name, why in SKIPPED.items()}
    assert skipped.keys() == shown.keys()  # each bad file once, however often it was named
    for name, why in shown.items():
        assert skipped[name].startswith(why), (name, skipped[name])

    c = Collection("bad", create=False)
    paths = {os.path.basename(p) for (p,) in c.db.execute("select path from documents")}
    assert paths == set(READ)
    for (text,) in c.db.execute("select text from chunks"):
        assert c.embedder.count_tokens(text) <= DEFAULT_TARGET_TOKENS  # whatever the input
    assert "Otters" in hearth("search", "do otters hold hands", "--collection", "bad", "-k", "1").stdout

    only_bad = hearth("ingest", *(corpus / name for name in ("empty.txt", "binary.dat", "pipe.fifo")),
                      "--collection", "bad", check=False)
    assert only_bad.returncode == 1 and "Traceback" not in only_bad.stderr  # nothing useful was done
    assert len(skip_lines(only_bad.stderr)) == 3


def one_line_error(run) -> str:
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    lines = [line for line in re.split(r"[\r\n]", run.stderr) if line.strip() and "|" not in line]  # no bars
    assert len(lines) == 1 and lines[0].startswith("hearth: error: "), run.stderr
    return lines[0]


@pytest.mark.parametrize("name", sorted(set(SKIPPED) - {BAD_NAME}))
def test_commands_that_read_one_file_name_the_problem_in_one_line(name, corpus, tmp_path):
    path = corpus / name
    assert SKIPPED[name] in one_line_error(hearth("check", "--sources", path, corpus / "good.md",
                                                  "--answer", "Otters hold hands.", check=False))
    for args in (("train", "tokenizer", "--vocab-size", "300", "--out", tmp_path / "tok", path),
                 ("train", "sft", "--data", path, "--out", tmp_path / "sft", "--max-steps", "1"),
                 ("train", "pretrain", "--data", path, "--out", tmp_path / "pre", "--max-steps", "1"),
                 ("eval", "retrieval", "--squad", path),
                 ("eval", "grounding", "--format", "ragtruth", "--data", path)):
        one_line_error(hearth(*args, check=False))
    removed = hearth("index", "remove", path, "--collection", "none-yet", check=False)
    one_line_error(removed)


def test_a_damaged_faiss_file_is_rebuilt_not_fatal(corpus):
    hearth("ingest", corpus / "good.md", "--collection", "notes")
    c = Collection("notes", create=False)
    c.index_path.write_bytes(c.index_path.read_bytes()[:40])  # cut short
    c.close()
    assert "Otters" in hearth("search", "otters", "--collection", "notes", "-k", "1").stdout
    assert "collection notes: ok" in hearth("doctor").stdout
