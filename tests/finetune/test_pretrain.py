import json

import pytest
import torch
from safetensors.torch import load_file

from finetune.pretrain import pretrain
from tests.helpers import CORPUS


@pytest.fixture
def corpus(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("\n\n".join(CORPUS))
    return f


def _run(corpus, out, **kw):
    overrides = {"batch_size": 8, "max_steps": 6, "eval_every": 3, "warmup_steps": 2, "seed": 1}
    return pretrain([corpus], out, preset="book", vocab_size=300, context=16, overrides=overrides, quiet=True, **kw)


def test_pretrain_writes_a_loadable_checkpoint_and_reports(corpus, tmp_path):
    summary = _run(corpus, tmp_path / "ckpt")
    assert summary["steps"] == 6 and summary["tokens"] == 6 * 8 * 16
    assert summary["val_bpc"] > 0 and summary["val_ppl"] > 1
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors", "trainer_state.json"} <= files
    from backends.registry import load_backend

    backend = load_backend("scratch", tmp_path / "ckpt")
    assert backend.context_length == 16


def test_stopped_and_resumed_run_equals_uninterrupted_run(corpus, tmp_path):
    straight = _run(corpus, tmp_path / "a")
    _run(corpus, tmp_path / "b", stop=lambda trainer: trainer.state.step >= 3)
    state = json.loads((tmp_path / "b" / "trainer_state.json").read_text())
    assert state["state"]["step"] == 3
    resumed = pretrain([corpus], tmp_path / "b", resume=tmp_path / "b", quiet=True)
    assert resumed["steps"] == straight["steps"] == 6
    a = json.loads((tmp_path / "a" / "trainer_state.json").read_text())["state"]["history"]
    b = json.loads((tmp_path / "b" / "trainer_state.json").read_text())["state"]["history"]
    losses = lambda h: [(e["step"], e["loss"]) for e in h if "loss" in e]
    assert losses(a) == losses(b)
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed["val_loss"] == straight["val_loss"]
