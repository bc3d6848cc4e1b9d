"""`hearth bench decode`: our engine vs transformers `generate` on the default SmolLM2 weights.

Both run on the same device: the CPU, or a GPU when there is one (int8 is CPU-only; on a GPU our
decode steps are CUDA graph replays, and the best precision is also timed with eager steps).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Callable

import torch

from assistant import chatml
from backends.base import GenerationParams
from backends.params import GREEDY

log = logging.getLogger(__name__)

PROMPT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a detailed story about a lighthouse keeper who finds a map."},
]


def _hf_decode_tok_s(model, prompt_ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
    """transformers generate, greedy, fixed length; tokens/s from the first token to the last."""
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    ids = torch.tensor([prompt_ids], device=model.device)
    clock = Clock()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, streamer=clock,
                             pad_token_id=model.config.eos_token_id)
    first, last = clock.times[1], clock.times[-1]  # times[0] is the prompt being "put"
    return (new_tokens - 1) / (last - first), out[0, len(prompt_ids):].tolist()


def _engine_decode_tok_s(engine, prompt_ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
    """Our engine, greedy, fixed length (no stop token); tokens/s from the first token to the last."""
    engine.reset()
    times, ids = [], []
    for step in engine.generate(prompt_ids, GenerationParams(GREEDY, new_tokens), frozenset()):
        times.append(time.perf_counter())
        ids.append(step.token_id)
    return (len(times) - 1) / (times[-1] - times[0]), ids


def _top1_agreement(model, reference_logits: torch.Tensor, ids: list[int]) -> float:
    """Share of positions of `ids` where `model` predicts the same next token as the fp32 reference."""
    with torch.inference_mode():
        logits = model(torch.tensor([ids], device=reference_logits.device))[0]
    return float((logits.argmax(-1) == reference_logits.argmax(-1)).float().mean())


def _followup_ttft(engine, history_ids: list[int], followup_ids: list[int], reuse: bool) -> float:
    """Seconds from a follow-up prompt to its first sampled token, with or without the cached history."""
    engine.reset()
    if reuse:
        engine.prefill(history_ids)
    start = time.perf_counter()
    step = next(iter(engine.generate(followup_ids, GenerationParams(GREEDY, 1), frozenset())))
    assert step is not None
    return time.perf_counter() - start


def _long_conversation(tokenizer, target_tokens: int = 1000) -> tuple[list[int], list[int]]:
    """ids of a ~target-token chat (history incl. last reply) and of its follow-up prompt."""
    messages = [PROMPT[0]]
    topic = ("the history of lighthouses, their lenses, the keepers' daily routines, the storms they "
             "survived and the ships they guided safely into harbour over two centuries")
    i = 0
    while len(chatml.encode(messages, tokenizer).ids) < target_tokens:
        messages.append({"role": "user", "content": f"Tell me part {i + 1} about {topic}."})
        messages.append({"role": "assistant", "content": f"Part {i + 1}: " + topic.capitalize() + ". " * 1
                         + "Keepers trimmed wicks, polished brass, logged the weather every hour and "
                           "rowed out to rescue sailors when the fog rolled in. " * 2})
        i += 1
    history = chatml.encode(messages, tokenizer).ids
    followup = chatml.encode(messages + [{"role": "user", "content": "Summarise that in one line."}],
                             tokenizer, add_generation_prompt=True).ids
    return history, followup


def run(new_tokens: int = 256, report: Callable[[str], None] = print, device: str | None = None) -> dict:
    """Measure everything the issue asks for; return the JSON-ready result."""
    from transformers import AutoModelForCausalLM

    from backends.hf.default_model import ensure_default_model
    from backends.registry import CPU_ONLY_PRECISIONS, PRECISIONS
    from backends.scratch.backend import apply_precision
    from backends.scratch.engine import Engine
    from backends.scratch.weights import load_model
    from backends.tokenizer import ChatTokenizer

    folder = ensure_default_model(report)
    tokenizer = ChatTokenizer.from_file(folder)
    prompt_ids = chatml.encode(PROMPT, tokenizer, add_generation_prompt=True).ids
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    report(f"device: {where}, prompt: {len(prompt_ids)} tokens, new tokens: {new_tokens}")

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    base = load_model(folder).to(device)  # loaded once; each precision below works on its own copy
    prompt = torch.tensor([prompt_ids], device=device)

    with torch.inference_mode():
        hf_logits = hf(prompt).logits[0, -1]
        ours_logits = base(prompt)[0, -1]
    max_diff = float((hf_logits - ours_logits).abs().max())

    _hf_decode_tok_s(hf, prompt_ids, 8)  # warm-up
    hf_tok_s, hf_ids = _hf_decode_tok_s(hf, prompt_ids, new_tokens)
    report(f"transformers generate fp32: {hf_tok_s:.1f} tok/s")
    del hf

    results: dict[str, float] = {}
    agreement: dict[str, float] = {}
    engines = {}
    fp32_ids: list[int] = []
    reference_logits = None
    precisions = [p for p in PRECISIONS if device.type == "cpu" or p not in CPU_ONLY_PRECISIONS]
    for precision in precisions:
        model = apply_precision(copy.deepcopy(base).fuse_for_inference(), precision)
        engine = Engine(model, max_len=4096)
        _engine_decode_tok_s(engine, prompt_ids, 8)  # warm-up
        tok_s, ids = _engine_decode_tok_s(engine, prompt_ids, new_tokens)
        results[precision] = tok_s
        engines[precision] = engine
        if precision == "fp32":
            fp32_ids = ids
            with torch.inference_mode():
                reference_logits = model(torch.tensor([prompt_ids + fp32_ids], device=device))[0]
        # a fast precision only counts if it still predicts what fp32 predicts (teacher-forced on fp32's text)
        agreement[precision] = _top1_agreement(model, reference_logits, prompt_ids + fp32_ids)
        report(f"scratch engine {precision}: {tok_s:.1f} tok/s ({tok_s / hf_tok_s:.2f}x transformers), "
               f"next-token agreement with fp32 {agreement[precision]:.3f}")
    best = max(results, key=results.get)
    eager_tok_s = None
    if device.type == "cuda":  # what the CUDA graphs are worth: the same model, one launch per kernel
        eager = Engine(engines[best].model, max_len=4096, fixed_shape_steps=False)
        _engine_decode_tok_s(eager, prompt_ids, 8)
        eager_tok_s = _engine_decode_tok_s(eager, prompt_ids, new_tokens)[0]
        report(f"scratch engine {best} with eager steps: {eager_tok_s:.1f} tok/s "
               f"(CUDA graphs {results[best] / eager_tok_s:.2f}x)")
        del eager

    n_match = 0
    for a, b in zip(fp32_ids[:64], hf_ids[:64]):
        if a != b:
            break
        n_match += 1

    history, followup = _long_conversation(tokenizer)
    engine = engines[best]
    _followup_ttft(engine, history, followup, reuse=True)  # warm-up
    reuse = min(_followup_ttft(engine, history, followup, reuse=True) for _ in range(3))
    cold = min(_followup_ttft(engine, history, followup, reuse=False) for _ in range(3))
    report(f"follow-up turn after {len(history)} tokens ({best}): time to first token "
           f"{reuse * 1000:.0f} ms with prefix reuse vs {cold * 1000:.0f} ms cold ({cold / reuse:.1f}x)")

    return {
        "device": where,
        "hf_tok_s": round(hf_tok_s, 2),
        "scratch_fp32_tok_s": round(results["fp32"], 2),
        "scratch_best_tok_s": round(results[best], 2),
        "best_precision": best,
        "best_top1_agreement": round(agreement[best], 4),
        "speedup_fp32": round(results["fp32"] / hf_tok_s, 3),
        "speedup_best": round(results[best] / hf_tok_s, 3),
        "followup_ttft_reuse_s": round(reuse, 4),
        "followup_ttft_cold_s": round(cold, 4),
        "max_abs_logit_diff": max_diff,
        "greedy_match_tokens": n_match,
        "best_eager_steps_tok_s": None if eager_tok_s is None else round(eager_tok_s, 2),
    }
