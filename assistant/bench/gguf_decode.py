"""`hearth bench decode --gguf FILE`: the scratch engine on a GGUF file's own blocks against llama.cpp
(llama-cpp-python) on the same file, in the same run, at 1 and 2 threads.

Each side runs in a fresh process of its own (so its peak resident memory is its own), on the same
prompt ids: prefill tokens/s over the prompt, greedy decode tokens/s over the new tokens (best of two
runs: the first warms up). The parent also reports the next-token agreement of the kernels with the
same weights dequantised to float32 over a real text.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

TEXT = ("Hearth is a private assistant that runs on your own computer. It keeps every conversation in a local "
        "database, answers questions over your documents with citations, and checks each sentence of a grounded "
        "answer against its sources. The engine maps the model file and multiplies its quantised blocks directly, "
        "so a process holds little more than the file itself. ") * 8


def _ours(path: Path, ids: list[int], new_tokens: int, threads: int) -> dict:
    import torch

    from backends.scratch.backend import ScratchBackend

    torch.set_num_threads(threads)
    engine = ScratchBackend(path).engine
    best_pre = best_dec = 0.0
    for _ in range(2):
        engine.reset()
        start = time.perf_counter()
        logits = engine.prefill(ids)
        best_pre = max(best_pre, len(ids) / (time.perf_counter() - start))
        token = int(logits.argmax())
        start = time.perf_counter()
        for _ in range(new_tokens):
            token = int(engine.step(torch.tensor([token]), token).argmax())
        best_dec = max(best_dec, new_tokens / (time.perf_counter() - start))
    return {"prefill_tok_s": best_pre, "decode_tok_s": best_dec}


def _llamacpp(path: Path, ids: list[int], new_tokens: int, threads: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=len(ids) + new_tokens + 8, n_threads=threads, n_threads_batch=threads,
                n_batch=512, verbose=False)
    best_pre = best_dec = 0.0
    for _ in range(2):
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        best_pre = max(best_pre, len(ids) / (time.perf_counter() - start))
        token = int(llm.scores[llm.n_tokens - 1].argmax())  # the last row's logits (greedy, as ours)
        start = time.perf_counter()
        for _ in range(new_tokens):
            llm.eval([token])
            token = int(llm.scores[llm.n_tokens - 1].argmax())
        best_dec = max(best_dec, new_tokens / (time.perf_counter() - start))
    return {"prefill_tok_s": best_pre, "decode_tok_s": best_dec}


def child(argv: list[str]) -> None:
    """Entry point of one measuring process: prints one JSON line."""
    side, path, threads, new_tokens = argv[0], Path(argv[1]), int(argv[2]), int(argv[3])
    ids = json.loads(sys.stdin.read())
    result = (_ours if side == "hearth" else _llamacpp)(path, ids, new_tokens, threads)
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _measure(side: str, path: Path, ids: list[int], threads: int, new_tokens: int) -> dict | None:
    run = subprocess.run([sys.executable, "-m", "assistant.bench.gguf_decode", side, str(path), str(threads),
                          str(new_tokens)], input=json.dumps(ids), capture_output=True, text=True)
    if run.returncode != 0:
        return {"error": (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def _agreement(path: Path, ids: list[int]) -> float:
    """Share of positions where the kernels' greedy next token equals the dequantised fp32 model's."""
    import torch

    from backends.scratch.backend import ScratchBackend
    from backends.scratch.gguf_native import load_dequantized_model

    engine = ScratchBackend(path).engine
    with torch.inference_mode():
        ours = engine.native.forward(ids, 0)
        engine.reset()
        reference = load_dequantized_model(engine.model.gguf)(torch.tensor([ids]))[0]
    return float((ours.argmax(-1) == reference.argmax(-1)).float().mean())


def run(path: Path, new_tokens: int = 64, prompt_tokens: int = 256, report: Callable[[str], None] = print) -> dict:
    from backends.scratch.backend import ScratchBackend

    path = Path(path)
    tokenizer = ScratchBackend(path).tokenizer
    ids = tokenizer.encode(TEXT)[:prompt_tokens]
    try:
        import llama_cpp  # noqa: F401
        have_llamacpp = True
    except ImportError:
        have_llamacpp = False
        report("llama-cpp-python is not installed (pip install '.[llamacpp]'): measuring Hearth alone")
    result = {"file": path.name, "prompt_tokens": len(ids), "new_tokens": new_tokens, "threads": {}}
    for threads in (1, 2):
        row = {"hearth": _measure("hearth", path, ids, threads, new_tokens)}
        if have_llamacpp:
            row["llamacpp"] = _measure("llamacpp", path, ids, threads, new_tokens)
            ours, theirs = row["hearth"], row["llamacpp"]
            if "error" not in ours and "error" not in theirs:
                row["decode_ratio"] = round(ours["decode_tok_s"] / theirs["decode_tok_s"], 3)
                row["prefill_ratio"] = round(ours["prefill_tok_s"] / theirs["prefill_tok_s"], 3)
        result["threads"][threads] = row
        for side, r in row.items():
            if isinstance(r, dict):
                report(f"{threads} thread(s) {side:<9} " + ("error: " + r["error"] if "error" in r else
                       f"prefill {r['prefill_tok_s']:7.1f} tok/s  decode {r['decode_tok_s']:6.1f} tok/s  "
                       f"peak RSS {r['rss_mb']:.0f} MB"))
        if "decode_ratio" in row:
            report(f"{threads} thread(s) Hearth / llama.cpp: decode {row['decode_ratio']:.2f}x, "
                   f"prefill {row['prefill_ratio']:.2f}x")
    result["file_mb"] = round(path.stat().st_size / 2**20, 1)
    result["agreement_vs_fp32"] = round(_agreement(path, tokenizer.encode(TEXT)[:512]), 4)
    report(f"greedy next-token agreement with the dequantised fp32 model over {min(512, len(ids))}+ tokens of text: "
           f"{result['agreement_vs_fp32']:.3f}")
    return result


if __name__ == "__main__":
    child(sys.argv[1:])
