"""Supervised conversations that teach a model Hearth's grounded-answer task, built from a SQuAD file.

Each question is put to a collection of the file's own articles exactly as `hearth ask --docs` puts
it (the same retrieval, numbered sources and system prompt: assistant/rag.py), in the layout the
grounded-answer adapter reads (the sources focused on rag.ADAPTER_FOCUS evidence sentences), and
the reply is what a good answer to that prompt is:
- answerable (the gold paragraph's answer sentence is among the evidence): that sentence, cited
  with the number of the source that holds it ("... 24-10 [2].");
- unanswerable: the gold paragraph left out of the sources (the next best chunks take its place,
  and none of them may contain a gold answer), one of SQuAD 2.0's own unanswerable questions, or an
  answerable question changed the way SQuAD 2.0's writers made theirs (perturbed()): one of its
  names or numbers swapped for another of the article's that no source holds, or negated; the
  evidence still reads like the answer, so the model must match the question, not its topic. The
  reply is the exact refusal, rag.ABSTAIN.
Questions whose best source is below rag.MIN_RELEVANCE are skipped: Hearth abstains on those
without asking the model, so they teach it nothing.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from assistant import rag
from assistant.bench.answers import articles_collection, normalise
from assistant.bench.retrieval import SquadQuestion, load_squad
from assistant.config import DEFAULT_K
from assistant.errors import HearthError
from assistant.grounding.split import split_sentences

MAX_SENTENCE_WORDS = 40  # a longer answer sentence is replaced by the answer span itself


@dataclass
class GroundedCounts:
    """How many examples of each kind were written, and why questions were skipped."""

    answerable: int = 0
    unanswerable_gold_removed: int = 0
    unanswerable_squad2: int = 0
    unanswerable_perturbed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def to_dict(self) -> dict:
        return {"answerable": self.answerable, "unanswerable_gold_removed": self.unanswerable_gold_removed,
                "unanswerable_squad2": self.unanswerable_squad2,
                "unanswerable_perturbed": self.unanswerable_perturbed, "skipped": dict(sorted(self.skipped.items()))}


def excluded_titles(files: list[Path]) -> set[str]:
    """The article titles of other SQuAD files (their articles must not be trained on)."""
    titles: set[str] = set()
    for path in files:
        paragraphs, _ = load_squad(path)
        titles |= {title for title, _ in paragraphs}
    return titles


def answer_sentence(paragraph: str, question: SquadQuestion) -> str:
    """The sentence of the paragraph that holds the first answer, or the answer itself when that
    sentence is long (or the offset is unknown)."""
    start = question.answer_starts[0] if question.answer_starts else -1
    if start >= 0:
        for a, b in split_sentences(paragraph):
            if a <= start < b:
                sentence = " ".join(paragraph[a:b].split())
                if len(sentence.split()) <= MAX_SENTENCE_WORDS and normalise(question.answers[0]) in normalise(sentence):
                    return sentence
                break
    return question.answers[0].strip()


def cited(text: str, number: int) -> str:
    """The reply text with its citation before the final full stop: "... title [2]."."""
    text = text.rstrip()
    body = text[:-1] if text.endswith((".", "!", "?")) else text
    return f"{body} [{number}]" + (text[-1] if text.endswith(("!", "?")) else ".")


def _holds_answer(text: str, answers: tuple[str, ...]) -> bool:
    flat = normalise(text)
    return any(normalise(a) and normalise(a) in flat for a in answers)


# A name (capitalised words, not the first of a sentence) or a number: what an entity swap replaces.
_ENTITY = re.compile(r"(?<!^)(?<![.?!] )\b(?:[A-Z][a-z]+(?: [A-Z][a-z]+)*|\d[\d,]*)\b")
# The first auxiliary verb, and its negation ("When was X built" -> "When wasn't X built").
_NEGATED = {"is": "isn't", "was": "wasn't", "are": "aren't", "were": "weren't", "did": "didn't", "does": "doesn't",
            "do": "don't", "can": "can't", "could": "couldn't", "has": "hasn't", "have": "haven't", "had": "hadn't",
            "will": "won't", "would": "wouldn't"}
_AUXILIARY = re.compile(r"\b(" + "|".join(_NEGATED) + r")\b(?! not\b)")
SWAP_SHARE = 0.7  # of perturbed questions, how many are entity swaps (when one is possible) rather than negations


def article_entities(paragraphs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Every article's distinct names and numbers (_ENTITY), in reading order."""
    entities: dict[str, dict[str, None]] = {}
    for title, text in paragraphs:
        found = entities.setdefault(title, {})
        for match in _ENTITY.finditer(text):
            found.setdefault(match.group(), None)
    return {title: list(found) for title, found in entities.items()}


def perturbed(question: str, paragraph: str, entities: list[str], rng: random.Random) -> tuple[str, str | None] | None:
    """(a question the paragraph no longer answers, the word swapped in or None for a negation), or None
    when neither change applies. An entity swap replaces a name or number the question shares with the
    paragraph by another of the same kind from its article that the paragraph does not hold; a negation
    negates the first auxiliary verb ("did" -> "didn't")."""
    swaps = [m for m in _ENTITY.finditer(question) if m.group() in paragraph]
    if swaps and rng.random() < SWAP_SHARE:
        target = rng.choice(swaps)
        numeric = target.group()[0].isdigit()
        others = [e for e in entities if e[0].isdigit() == numeric and e not in paragraph and e not in question]
        if others:
            word = rng.choice(others)
            return question[:target.start()] + word + question[target.end():], word
    auxiliary = _AUXILIARY.search(question)
    if auxiliary is None:
        return None
    return question[:auxiliary.start()] + _NEGATED[auxiliary.group()] + question[auxiliary.end():], None


def build(squad: Path, out: Path, exclude: list[Path] = (), limit: int | None = None, seed: int = 0,
          gold_removed_share: float = 0.3, perturbed_share: float = 0.0, k: int = DEFAULT_K,
          min_k: int | None = None, report: Callable[[str], None] = print) -> GroundedCounts:
    """Write `out` (JSONL of {"messages": [system, user, assistant]}) from a SQuAD file.

    Each question gets k sources, or with min_k a seeded number between min_k and k: a model
    that only ever saw k sources can key its refusal to the layout rather than to the content,
    and shorter prompts make training steps cheaper.
    """
    if not 0 <= gold_removed_share <= 1:
        raise HearthError("--gold-removed-share must be between 0 and 1")
    if not 0 <= perturbed_share <= 1 or gold_removed_share + perturbed_share > 1:
        raise HearthError("--perturbed-share must be between 0 and 1, and with --gold-removed-share at most 1")
    min_k = k if min_k is None else min_k
    if not 1 <= min_k <= k:
        raise HearthError(f"--min-sources must be between 1 and -k ({k})")
    paragraphs, questions = load_squad(squad)
    skip_titles = excluded_titles(list(exclude))
    kept_paragraphs = [p for p in paragraphs if p[0] not in skip_titles]
    if not kept_paragraphs:
        raise HearthError(f"every article of {squad} is excluded")
    questions = [q for q in questions if paragraphs[q.paragraph][0] not in skip_titles]
    entities = article_entities(kept_paragraphs)
    rng = random.Random(seed)
    rng.shuffle(questions)
    counts = GroundedCounts()
    report(f"{len(kept_paragraphs)} paragraphs of {len({t for t, _ in kept_paragraphs})} articles "
           f"({len(skip_titles)} articles excluded); {len(questions)} questions")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with tempfile.TemporaryDirectory(prefix="hearth-grounded-sft-") as tmp, \
            open(out.with_suffix(out.suffix + ".tmp"), "w", encoding="utf-8") as f:
        collection, ingested = articles_collection(kept_paragraphs, Path(tmp))
        report(f"indexed {ingested.chunks} chunks")
        try:
            for n, q in enumerate(questions, 1):
                if limit is not None and written >= limit:
                    break
                sources_k = rng.randint(min_k, k) if min_k < k else k
                title, paragraph = paragraphs[q.paragraph]
                example = _example(collection, paragraph, entities[title], q, rng, gold_removed_share,
                                   perturbed_share, sources_k, counts)
                if example is not None:
                    # sources are named relative to the temporary folder ("docs/003.md"): the same
                    # command writes the same bytes
                    for message in example:
                        for prefix in {f"{Path(tmp).resolve()}{os.sep}", f"{tmp}{os.sep}"}:
                            message["content"] = message["content"].replace(prefix, "")
                    f.write(json.dumps({"messages": example}, ensure_ascii=False) + "\n")
                    written += 1
                if n % 200 == 0:
                    report(f"{n}/{len(questions)} questions, {written} examples")
        finally:
            collection.close()
    out.with_suffix(out.suffix + ".tmp").replace(out)  # a crash leaves no half file under the name
    return counts


def _example(collection, paragraph: str, entities: list[str], q: SquadQuestion, rng: random.Random,
             gold_removed_share: float, perturbed_share: float, k: int, counts: GroundedCounts) -> list[dict] | None:
    if q.impossible:
        sources, relevant = rag.retrieve(collection, q.text, k, focus=rag.ADAPTER_FOCUS)
        if not relevant:
            counts.skip("not relevant")
            return None
        counts.unanswerable_squad2 += 1
        return _conversation(q.text, sources, rag.ABSTAIN)
    if not q.answers:
        counts.skip("no answer text")
        return None
    sentence = answer_sentence(paragraph, q)
    draw = rng.random()
    if draw >= 1 - perturbed_share:
        return _perturbed_example(collection, paragraph, entities, q, rng, k, counts)
    remove_gold = draw < gold_removed_share
    query_vec = collection.embedder.encode([q.text])[0]  # once, for retrieval and the focus
    sources, relevant = rag.retrieve(collection, q.text, 3 * k if remove_gold else k, query_vec=query_vec)
    if not relevant:
        counts.skip("not relevant")
        return None
    if remove_gold:
        rest = [s for s in sources if not _holds_answer(s.text, q.answers)][:k]
        if len(rest) < k:
            counts.skip("too few chunks without the answer")
            return None
        counts.unanswerable_gold_removed += 1
        rest = rag.focused(rest, q.text, query_vec, collection.embedder, rag.ADAPTER_FOCUS)
        return _conversation(q.text, rest, rag.ABSTAIN)
    flat = normalise(sentence)
    if not any(flat in normalise(s.text) for s in sources):
        counts.skip("answer sentence not retrieved")
        return None
    sources = rag.focused(sources, q.text, query_vec, collection.embedder, rag.ADAPTER_FOCUS)
    gold = next((s for s in sources if flat in normalise(s.text)), None)
    if gold is None:
        counts.skip("answer sentence not among the focused evidence")
        return None
    counts.answerable += 1
    return _conversation(q.text, sources, cited(sentence, gold.number))


def _perturbed_example(collection, paragraph: str, entities: list[str], q: SquadQuestion, rng: random.Random, k: int,
                       counts: GroundedCounts) -> list[dict] | None:
    change = perturbed(q.text, paragraph, entities, rng)
    if change is None:
        counts.skip("no name, number or auxiliary verb to change")
        return None
    question, swapped_in = change
    query_vec = collection.embedder.encode([question])[0]
    sources, relevant = rag.retrieve(collection, question, k, query_vec=query_vec)
    if not relevant:
        counts.skip("not relevant")
        return None
    if swapped_in is not None and any(swapped_in in s.text for s in sources):
        counts.skip("the swapped-in name is in the sources")
        return None
    counts.unanswerable_perturbed += 1
    sources = rag.focused(sources, question, query_vec, collection.embedder, rag.ADAPTER_FOCUS)
    return _conversation(question, sources, rag.ABSTAIN)


def _conversation(question: str, sources: list[rag.Source], reply: str) -> list[dict]:
    system, current = rag.grounded_messages(question, sources)
    return [{"role": m.role, "content": m.content} for m in (system, *current)] + [
        {"role": "assistant", "content": reply}]
