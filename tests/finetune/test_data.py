import json
import re

import pytest

from assistant import chatml
from assistant.errors import HearthError
from finetune.chat_data import IGNORE, encode_example, load_examples, to_messages
from finetune.data import TokenStream, read_documents, split_documents
from finetune.tokenizer import SPECIAL_TOKENS, train_bpe

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def test_tokenizer_registers_chatml_specials(tmp_path):
    from backends.tokenizer import ChatTokenizer

    tok = train_bpe(["hello world " * 50, "the quick brown fox " * 50], vocab_size=300)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    tok.save(str(tmp_path / "tokenizer.json"))
    chat = ChatTokenizer.from_file(tmp_path)
    assert (chat.im_start_id, chat.im_end_id, chat.eos_id) == (1, 2, 0)
    assert chat.decode(chat.encode("hello fox")) == "hello fox"


def test_labels_supervise_only_assistant_tokens_and_im_end(tiny_tokenizer):
    ex = encode_example(CONVERSATION, tiny_tokenizer, max_len=1000)
    expected = []
    for m in CONVERSATION:
        header = [tiny_tokenizer.im_start_id] + tiny_tokenizer.encode(f"{m['role']}\n")
        body = tiny_tokenizer.encode(m["content"]) + [tiny_tokenizer.im_end_id]
        newline = tiny_tokenizer.encode("\n")
        supervised = m["role"] == "assistant"
        expected += [IGNORE] * len(header) + (body if supervised else [IGNORE] * len(body)) + [IGNORE] * len(newline)
    assert ex.labels == expected
    assert len(ex.input_ids) == len(ex.labels)
    kept = [tiny_tokenizer.decode([i], skip_special=False) for i, l in zip(ex.input_ids, ex.labels) if l != IGNORE]
    assert "".join(kept) == "Hello!<|im_end|>Paris.<|im_end|>"


def test_training_and_chat_prompts_are_byte_identical(tiny_tokenizer):
    train_ids = encode_example(CONVERSATION, tiny_tokenizer, 1000).input_ids
    chat_ids = chatml.encode(CONVERSATION[:-1], tiny_tokenizer, add_generation_prompt=True).ids
    assert train_ids[: len(chat_ids)] == chat_ids
    assert tiny_tokenizer.decode(train_ids, skip_special=False) == chatml.render(CONVERSATION)


def test_formats(tmp_path, tiny_tokenizer):
    assert to_messages({"instruction": "Add 2 and 2", "solution": "4"}) == [
        {"role": "user", "content": "Add 2 and 2"}, {"role": "assistant", "content": "4"}]
    assert to_messages({"instruction": "Translate", "input": "chat", "output": "cat"})[0]["content"] == "Translate\n\nchat"
    multi = to_messages({"instruction": "And 3+3?", "input": "", "output": "6", "history": '[["2+2?", "4"]]'})
    assert [(m["role"], m["content"]) for m in multi] == [("user", "2+2?"), ("assistant", "4"), ("user", "And 3+3?"),
                                                         ("assistant", "6")]
    f = tmp_path / "data.json"
    f.write_text(json.dumps([{"instruction": "Say hi", "output": "hi"}, {"messages": CONVERSATION}]))
    assert len(load_examples(f, tiny_tokenizer, 512)) == 2


def test_example_without_supervision_is_an_error_naming_it(tmp_path, tiny_tokenizer):
    f = tmp_path / "data.jsonl"
    bad = {"messages": [{"role": "user", "content": "no reply"}]}
    f.write_text(json.dumps({"messages": CONVERSATION}) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(HearthError, match=r"data.jsonl line 3 has no assistant tokens"):  # the file's line
        load_examples(f, tiny_tokenizer, 512)
    f = tmp_path / "data.json"
    f.write_text(json.dumps([{"messages": CONVERSATION}, bad]))
    with pytest.raises(HearthError, match=r"data.json record 2 has no assistant tokens"):
        load_examples(f, tiny_tokenizer, 512)


def test_documents_split_and_token_stream(tmp_path, tiny_tokenizer):
    f = tmp_path / "t.txt"
    f.write_text("\n\n".join(f"Document {i} text." for i in range(20)))
    docs = read_documents([f])
    train, val = split_documents(docs)
    assert len(docs) == 20 and len(val) == 2 and val[-1] == "Document 19 text."
    stream = TokenStream.build(val, tiny_tokenizer)
    assert stream.chars == sum(len(d) + 2 for d in val)
    assert (stream.ids == tiny_tokenizer.eos_id).sum() == 2


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "robot", "content": "hi"}]}, "unknown role 'robot'"),
    ({"messages": [{"role": "user", "content": None}]}, "content must be text, not NoneType"),
    ({"messages": [{"role": "user", "content": ["a"]}]}, "content must be text, not list"),
    ({"instruction": "Say hi", "output": None}, "content must be text, not NoneType"),
])
def test_bad_training_records_are_one_line_errors(record, message, tmp_path, tiny_tokenizer):
    from assistant.errors import HearthError
    from finetune.chat_data import load_examples

    path = tmp_path / "data.jsonl"
    path.write_text("\n" + json.dumps({"messages": [{"role": "user", "content": "a"},
                                                    {"role": "assistant", "content": "b"}]})
                    + "\n" + json.dumps(record) + "\n")
    with pytest.raises(HearthError, match=f"line 3: .*{re.escape(message)}"):
        load_examples(path, tiny_tokenizer, 64)


def test_training_data_that_is_not_utf8_is_one_line_error(tmp_path, tiny_tokenizer):
    from assistant.errors import HearthError
    from finetune.chat_data import load_examples

    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"instruction": "caf\xe9", "output": "ok"}\n')
    with pytest.raises(HearthError, match="is not UTF-8 text"):
        load_examples(path, tiny_tokenizer, 64)
