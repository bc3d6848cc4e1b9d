"""`hearth bench decode`: our engine vs transformers `generate` on the default SmolLM2 weights.

Both run on the same device: the CPU, or a GPU when there is one (int8, q8 and q4 are CPU-only; on
a GPU our decode steps are CUDA graph replays, and the best precision is also timed with eager
steps). With `--squad FILE`, grounded answers (the file's paragraphs as numbered sources; through the
grounded-answer adapter on focused evidence, as the chat gives them, and the bundled model itself on
whole paragraphs) are decoded with and without prompt-lookup speculation; when llama-cpp-python is installed, llama.cpp
decodes the same prompt from the same GGUF file in the same run.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
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


def _timed(steps) -> tuple[float, list[int]]:
    """Tokens/s of a stream of TokenSteps from its first token to its last, and the token ids."""
    times, ids = [], []
    for step in steps:
        times.append(time.perf_counter())
        ids.append(step.token_id)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0, ids


def _engine_generate(engine, stop_ids: frozenset[int] = frozenset()):
    """generate(prompt, params, speculate, stats) for our engine, from an empty cache each time."""
    def generate(prompt_ids, params, speculate=False, stats=None):
        engine.reset()
        return engine.generate(prompt_ids, params, stop_ids, speculate=speculate, stats=stats)
    return generate


def _engine_decode_tok_s(engine, prompt_ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
    """Our engine, greedy, fixed length (no stop token); tokens/s from the first token to the last."""
    return _timed(_engine_generate(engine)(prompt_ids, GenerationParams(GREEDY, new_tokens)))


def grounded_prompts(squad: Path, tokenizer, count: int = 4, sources: int = 3, focus: bool = False) -> list[list[int]]:
    """`count` grounded prompts as `ask --docs` renders them: a SQuAD question with its own paragraph
    and the article's next ones as numbered sources; `focus`: cut to the sentences closest to the
    question, as the grounded-answer adapter reads them (rag.focused)."""
    from assistant import rag
    from assistant.bench.retrieval import load_squad
    from assistant.rag import Source, grounded_messages
    from retrieval.embedder import shared_embedder

    paragraphs, questions = load_squad(squad)
    prompts, seen = [], set()
    for q in questions:
        if q.impossible or q.paragraph in seen:
            continue
        seen.add(q.paragraph)
        chosen = [i for i in range(q.paragraph, min(len(paragraphs), q.paragraph + sources))]
        cited = [Source(n + 1, i, f"{paragraphs[i][0]}.txt", 1, None, "", paragraphs[i][1], 1.0)
                 for n, i in enumerate(chosen)]
        if focus:
            embedder = shared_embedder()
            cited = rag.focused(cited, q.text, embedder.encode([q.text])[0], embedder, rag.ADAPTER_FOCUS)
        system, turn = grounded_messages(q.text, cited)
        messages = [{"role": m.role, "content": m.content} for m in (system, *turn)]
        prompts.append(chatml.encode(messages, tokenizer, add_generation_prompt=True).ids)
        if len(prompts) == count:
            break
    return prompts


def _grounded_tok_s(generate, prompts: list[list[int]], new_tokens: int, speculate: bool):
    """Tokens/s over all grounded prompts (first to last token of each), the replies, the stats;
    generate(prompt, params, speculate, stats) streams one reply (_engine_generate, _hf_generate)."""
    from backends.speculation import SpeculationStats

    stats = SpeculationStats()
    tokens, seconds, replies = 0, 0.0, []
    for prompt in prompts:
        tok_s, ids = _timed(generate(prompt, GenerationParams(GREEDY, new_tokens, grounded=True), speculate, stats))
        tokens += len(ids) - 1
        seconds += (len(ids) - 1) / tok_s if tok_s else 0.0
        replies.append(ids)
    return tokens / seconds, replies, stats


def _llamacpp_tok_s(gguf: Path, prompt_ids: list[int], new_tokens: int) -> float | None:
    """llama.cpp (llama-cpp-python) on the same file and prompt ids, greedy; None when not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(gguf), n_ctx=4096, n_threads=torch.get_num_threads(), verbose=False)
    best = 0.0
    for _ in range(2):  # the first run warms up
        times = []
        for token in llm.generate(prompt_ids, top_k=1, temp=0.0, reset=True):
            times.append(time.perf_counter())
            if len(times) == new_tokens:
                break
        best = max(best, (len(times) - 1) / (times[-1] - times[0]))
    return best


def _top1_agreement(engine, reference_logits: torch.Tensor, ids: list[int]) -> float:
    """Share of positions of `ids` where the engine's model predicts the same next token as the fp32
    reference. A q8/q4 engine is fed the ids through its decode-step kernels, which compute each
    row as a one-token step would (its prefill path multiplies dequantized weights instead)."""
    with torch.inference_mode():
        if engine.native is not None:
            engine.reset()
            logits = engine.native.forward(ids, 0)
            engine.reset()
        else:
            logits = engine.model(torch.tensor([ids], device=reference_logits.device))[0]
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


def _speculation(generate, prompts: list[list[int]], max_tokens: int) -> dict:
    """The prompts decoded greedily without and with prompt-lookup speculation (same model)."""
    _grounded_tok_s(generate, prompts[:1], 8, False)  # warm-up
    plain, plain_ids, _ = _grounded_tok_s(generate, prompts, max_tokens, False)
    spec, spec_ids, stats = _grounded_tok_s(generate, prompts, max_tokens, True)
    return {"prompts": len(prompts), "prompt_tokens_mean": round(sum(map(len, prompts)) / len(prompts), 1),
            "reply_tokens_mean": round(sum(map(len, plain_ids)) / len(plain_ids), 1),
            "tok_s": round(plain, 2), "spec_tok_s": round(spec, 2), "speculation_speedup": round(spec / plain, 3),
            "accept_rate": round(stats.accept_rate, 3), "accepted": stats.accepted, "proposed": stats.proposed,
            "same_tokens": plain_ids == spec_ids}


def _hf_generate(folder: Path):
    """generate(prompt, params, speculate, stats) for the hf backend's grounded answers (its
    grounded-answer adapter; on the GPU when there is one)."""
    from backends.hf.backend import HFBackend
    from backends.hf.default_model import grounded_adapter_dir

    backend = HFBackend(folder, grounded_adapter=grounded_adapter_dir())
    return lambda prompt_ids, params, speculate=False, stats=None: backend._stream(
        prompt_ids, params, None, speculate=speculate, stats=stats)


def _grounded_answers_engine(folder: Path, precision: str, device):
    """The engine grounded answers go through on the scratch backend (ScratchBackend.grounded_engine:
    the default model with its grounded-answer adapter merged), or None when no adapter ships."""
    from backends.hf.default_model import grounded_adapter_dir
    from backends.scratch.backend import ScratchBackend

    adapter = grounded_adapter_dir()
    if adapter is None:
        return None
    return ScratchBackend(folder, precision=precision, device=str(device), grounded_adapter=adapter).grounded_engine()


def run(new_tokens: int = 256, report: Callable[[str], None] = print, device: str | None = None,
        squad: Path | None = None, grounded_tokens: int = 128) -> dict:
    """Measure everything the issue asks for; return the JSON-ready result."""
    from transformers import AutoModelForCausalLM

    from backends.hf.default_model import bundled_gguf, ensure_default_model, grounded_adapter_dir
    from backends.scratch import kernels
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
    if device.type == "cpu":
        report(f"q8/q4 kernels: {kernels.describe()}")

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
        model = apply_precision(copy.deepcopy(base).fuse_for_inference(), precision, bundled_gguf())
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
        agreement[precision] = _top1_agreement(engine, reference_logits, prompt_ids + fp32_ids)
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

    grounded: dict = {}
    if squad is not None:
        # Grounded answers as the chat gives them: through the grounded-answer adapter (merged) on
        # focused evidence, each reply to the end of its turn (at most grounded_tokens)...
        answers_engine = _grounded_answers_engine(folder, best, device)
        answers = _speculation(_engine_generate(answers_engine or engines[best], tokenizer.stop_ids),
                               grounded_prompts(squad, tokenizer, count=64, focus=answers_engine is not None),
                               grounded_tokens)
        del answers_engine
        # ...and the bundled model itself on whole paragraphs, grounded_tokens with no stop (the
        # measurement before the adapter shipped: past its answer the model writes on, unread)
        base = _speculation(_engine_generate(engines[best]), grounded_prompts(squad, tokenizer), grounded_tokens)
        hf_answers = (_speculation(_hf_generate(folder), grounded_prompts(squad, tokenizer, count=16, focus=True),
                                   grounded_tokens) if grounded_adapter_dir() is not None else None)
        if hf_answers is not None:
            report(f"hf backend's grounded answers (adapter, fp32, {hf_answers['prompts']} questions): "
                   f"{hf_answers['tok_s']:.1f} tok/s, with speculation {hf_answers['spec_tok_s']:.1f} tok/s "
                   f"({hf_answers['speculation_speedup']:.2f}x), same tokens: {hf_answers['same_tokens']}")
        grounded = {"grounded_prompts": answers["prompts"],
                    "grounded_prompt_tokens_mean": answers["prompt_tokens_mean"],
                    "grounded_reply_tokens_mean": answers["reply_tokens_mean"],
                    "grounded_through_adapter": grounded_adapter_dir() is not None,
                    "grounded_tok_s": answers["tok_s"], "grounded_spec_tok_s": answers["spec_tok_s"],
                    "speculation_speedup_grounded": answers["speculation_speedup"],
                    "accept_rate": answers["accept_rate"], "speculation_same_tokens": answers["same_tokens"],
                    "grounded_base_no_stop": base, "hf_grounded": hf_answers}
        for name, m in (("grounded answers" + (" (adapter, focused evidence)" if grounded["grounded_through_adapter"]
                                              else ""), answers),
                        (f"the model itself, whole paragraphs, {grounded_tokens} tokens with no stop", base)):
            report(f"{name} ({best}, {m['prompts']} SQuAD questions, {m['reply_tokens_mean']:.1f} tokens each): "
                   f"{m['tok_s']:.1f} tok/s, with prompt-lookup speculation {m['spec_tok_s']:.1f} tok/s "
                   f"({m['speculation_speedup']:.2f}x), {m['accepted']}/{m['proposed']} proposals accepted, "
                   f"same tokens: {m['same_tokens']}")

    llamacpp = _llamacpp_tok_s(bundled_gguf(), prompt_ids, new_tokens) if device.type == "cpu" else None
    if llamacpp is not None:
        report(f"llama.cpp (llama-cpp-python) on {bundled_gguf().name}: {llamacpp:.1f} tok/s; "
               f"scratch engine {best} / llama.cpp = {results[best] / llamacpp:.2f}")

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
        "kernels": kernels.describe() if device.type == "cpu" else None,
        "precisions": {p: {"tok_s": round(results[p], 2), "top1_agreement": round(agreement[p], 4)} for p in results},
        "llamacpp_tok_s": None if llamacpp is None else round(llamacpp, 2),
        "ratio_to_llamacpp": None if llamacpp is None else round(results[best] / llamacpp, 3),
        **grounded,
    }
