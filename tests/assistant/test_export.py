"""Exported transcripts keep what a grounded reply's citations point to."""

from assistant.export import to_markdown
from assistant.records import Conversation, Message

SOURCE = {"rank": 1, "score": 0.9, "path": "/notes/cat.md", "line": 3, "page": None, "heading": "Miso",
          "text": "She sleeps on the windowsill.", "chunk_id": 4}
CHECKS = {"score": 0.42, "threshold": 0.65, "sentences": [
    {"text": "She sleeps on the sofa [1].", "start": 0, "end": 27, "score": 0.31, "verdict": "unsupported",
     "evidence": [4], "receipt": {"chunk": 4, "text": "She sleeps on the windowsill.", "support": 0.2,
                                  "path": "/notes/cat.md", "line": 3, "page": None}}]}


def test_markdown_lists_a_grounded_replys_sources_and_checked_sentences():
    conv = Conversation("Where does Miso sleep?", "Be brief.")
    text = to_markdown(conv, [Message("user", "Where does Miso sleep?"),
                              Message("assistant", "She sleeps on the sofa [1].", "stop", sources=[SOURCE],
                                      checks=CHECKS),
                              Message("user", "Thanks!"), Message("assistant", "You're welcome.", "stop")])
    assert text == "\n".join([
        "# Where does Miso sleep?", "", "*System:* Be brief.", "",
        "## You", "", "Where does Miso sleep?", "",
        "## Assistant", "", "She sleeps on the sofa [1].", "",
        "*support score 0.42, below the 0.65 threshold: the sources may not back this answer*", "",
        "Sources:", "", "- [1] /notes/cat.md (line 3) \u2014 Miso", "",
        "Checked sentences:", "",
        "- 1 \u26a0 \u201cShe sleeps on the sofa [1].\u201d \u2190 line 3: \u201cShe sleeps on the windowsill.\u201d (0.20)", "",
        "## You", "", "Thanks!", "",
        "## Assistant", "", "You're welcome.", ""])
