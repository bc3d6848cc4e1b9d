"""The support model: the probability that a source passage supports a claim sentence.

A cross-encoder: the bundled all-MiniLM-L6-v2 encoder reads the claim and a passage together
(`[CLS] claim [SEP] passage [SEP]`), its mean-pooled output goes through a linear head. Hearth trains
it (`hearth train support`: a LoRA adapter on the encoder plus the head, ~3 MB) and ships the result
in `support_model/` beside this file.

Long sources are read in windows: a window is one source sentence with its neighbours (WINDOW_RADIUS
on each side, within the same source). A claim is scored against the TOP_WINDOWS windows whose centre
sentences the embedder finds closest to it, and its support is the best window's probability: a
claim needs one passage that supports it, and reading every window of every source would cost
seconds per answer. The best window's sentence closest to the claim is the evidence shown to the user.

In the check it gives each sentence its receipt (check.SentenceCheck.receipt) and two signals
(FEATURES): the best window's probability and the mean over the windows read. A calibration uses
them when it was fitted with them (calibration.py: the shipped weights.json predates them).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from assistant.errors import HearthError
from assistant.grounding.semantic import sentence_spans  # the order semantic.similarities' cosines follow

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).with_name("support_model")
WEIGHTS_FILE, CONFIG_FILE = "support.safetensors", "support.json"
WINDOW_RADIUS = 1  # source sentences either side of a window's centre
TOP_WINDOWS = 3  # windows read per claim
MAX_LEN = 192  # claim + passage, in encoder tokens; the passage is cut when longer
BATCH = 32
LORA_TARGETS = ("query", "key", "value", "dense")  # every linear layer of the BERT blocks
FEATURES = ("support_best", "support_mean")


@dataclass(frozen=True)
class Window:
    """A passage of one source: sentences [first, last] around a centre sentence (character spans)."""

    source: int
    start: int
    end: int
    centre: tuple[int, int]


@dataclass
class Support:
    """A claim's support: the best window's probability, the window, every window read, and the
    sentence of the best window closest to the claim (source, start, end): its evidence."""

    probability: float
    window: Window | None
    read: list[tuple[Window, float]]
    evidence: tuple[int, int, int] | None = None


def window_at(spans: list[tuple[int, int, int]], j: int, radius: int = WINDOW_RADIUS) -> Window:
    """The window centred on sentence j of `spans` (neighbours from the same source only)."""
    source, a, b = spans[j]
    first, last = j, j
    while first > 0 and j - first < radius and spans[first - 1][0] == source:
        first -= 1
    while last + 1 < len(spans) and last - j < radius and spans[last + 1][0] == source:
        last += 1
    return Window(source, spans[first][1], spans[last][2], (a, b))


def top_windows(cosines: np.ndarray, spans: list[tuple[int, int, int]], k: int = TOP_WINDOWS) -> list[Window]:
    """The k distinct windows centred on the sentences with the highest cosines to the claim."""
    out: list[Window] = []
    for j in np.argsort(-np.asarray(cosines), kind="stable"):
        window = window_at(spans, int(j))
        if window not in out:
            out.append(window)
        if len(out) == k:
            break
    return out


class SupportNet:
    """Encoder + head as one torch module (built lazily so importing this file needs no torch)."""

    @staticmethod
    def build(encoder):
        import torch

        class Net(torch.nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder
                self.head = torch.nn.Linear(encoder.config.hidden_size, 1)

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                return self.head(pooled).squeeze(-1)  # logit of "supported"

        return Net(encoder)


def encoder_folder() -> Path:
    from retrieval.embedder import default_embedder_path

    return default_embedder_path()


def lora_config(r: int, alpha: int, dropout: float = 0.0):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LORA_TARGETS))


def new_net(r: int, alpha: int, dropout: float):
    """The trainable net: the bundled encoder with fresh LoRA adapters, and a fresh head."""
    from peft import get_peft_model
    from transformers import AutoModel

    from backends.hf.peft_quiet import quiet_peft

    with quiet_peft():
        encoder = get_peft_model(AutoModel.from_pretrained(encoder_folder()), lora_config(r, alpha, dropout))
    return SupportNet.build(encoder)


def trainable_state(net) -> dict:
    """What a support model adds to the encoder: the LoRA weights and the head."""
    from peft import get_peft_model_state_dict

    state = {f"lora.{k}": v for k, v in get_peft_model_state_dict(net.encoder).items()}
    state.update({f"head.{k}": v for k, v in net.head.state_dict().items()})
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def load_trainable(net, state: dict) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(net.encoder, {k[5:]: v for k, v in state.items() if k.startswith("lora.")})
    net.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})


def encode_pairs(tokenizer, claims: list[str], passages: list[str], max_len: int = MAX_LEN) -> dict:
    """Token ids of (claim, passage) pairs, padded to the longest; passages are cut to fit. A claim that
    leaves its passage no room (a runaway answer sentence) is first cut to half of max_len."""
    room = max_len - 4  # [CLS] claim [SEP] passage [SEP], with at least one token of the passage
    ids = tokenizer(claims, add_special_tokens=False)["input_ids"]
    claims = [c if len(i) <= room else tokenizer.decode(i[: max_len // 2]) for c, i in zip(claims, ids)]
    return tokenizer(claims, passages, truncation="only_second", max_length=max_len, padding=True,
                     return_tensors="pt")


class SupportModel:
    """A trained support model, ready to score (LoRA merged into the encoder; bf16 where the CPU has it)."""

    def __init__(self, folder: Path | None = None):
        import torch
        from peft import get_peft_model
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        from backends.hf.peft_quiet import quiet_peft
        from retrieval.embedder import cpu_has_fast_bf16

        self.folder = Path(folder) if folder else SHIPPED
        if not (self.folder / WEIGHTS_FILE).is_file():
            raise HearthError(f"{self.folder} holds no support model ({WEIGHTS_FILE}): train one with "
                              "`hearth train support`.")
        self.config = json.loads((self.folder / CONFIG_FILE).read_text())
        self.max_len = int(self.config.get("max_len", MAX_LEN))
        self.tokenizer = AutoTokenizer.from_pretrained(encoder_folder())
        with quiet_peft():
            encoder = get_peft_model(AutoModel.from_pretrained(encoder_folder()),
                                     lora_config(self.config["r"], self.config["alpha"]))
        net = SupportNet.build(encoder)
        load_trainable(net, load_file(self.folder / WEIGHTS_FILE))
        net.encoder = encoder.merge_and_unload()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = torch.bfloat16 if (self.device == "cuda" or cpu_has_fast_bf16()) else torch.float32
        self.net = net.to(self.device, self.dtype).eval()
        log.info("support model %s on %s in %s", self.folder, self.device, self.dtype)

    def probabilities(self, claims: list[str], passages: list[str]) -> np.ndarray:
        """P(passage supports claim) for each pair, batched by length."""
        import torch

        if not claims:
            return np.zeros(0)
        order = sorted(range(len(claims)), key=lambda i: len(claims[i]) + len(passages[i]))
        out = np.zeros(len(claims))
        with torch.inference_mode():
            for lo in range(0, len(order), BATCH):
                idx = order[lo : lo + BATCH]
                batch = encode_pairs(self.tokenizer, [claims[i] for i in idx], [passages[i] for i in idx], self.max_len)
                logits = self.net(**{k: v.to(self.device) for k, v in batch.items()})
                out[idx] = torch.sigmoid(logits.float()).cpu().numpy()
        return out

    def support(self, claims: list[str], sources: list[str], cosines: np.ndarray) -> list[Support]:
        """Each claim's support from its best window; cosines[i] ranks the source sentences for claim i."""
        spans = sentence_spans(sources)
        if not spans:
            return [Support(0.0, None, []) for _ in claims]
        chosen = [top_windows(cosines[i], spans) for i in range(len(claims))]
        pairs = [(i, w) for i, windows in enumerate(chosen) for w in windows]
        p = self.probabilities([claims[i] for i, _ in pairs], [sources[w.source][w.start : w.end] for _, w in pairs])
        read: list[list[tuple[Window, float]]] = [[] for _ in claims]
        for (i, w), value in zip(pairs, p):
            read[i].append((w, float(value)))
        out = []
        for i, windows in enumerate(read):
            window, p_best = max(windows, key=lambda wp: wp[1])
            inside = [j for j, (source, a, b) in enumerate(spans)
                      if source == window.source and window.start <= a and b <= window.end]
            j = max(inside, key=lambda j: cosines[i][j])
            out.append(Support(p_best, window, windows, spans[j]))
        return out


@lru_cache(maxsize=1)
def shipped_model() -> SupportModel:
    return SupportModel()


def measured(model: SupportModel, claims: list[str], sources: list[str], cosines: np.ndarray) -> list[dict]:
    """The support model's reading of each claim, as stored with a check's measurements:
    {"p": best window's probability, "mean": mean over the windows read, "evidence": [source, start, end]
    of the best window's sentence closest to the claim, or None when there are no sources}."""
    out = []
    for s in model.support(claims, sources, cosines):
        mean = float(np.mean([p for _, p in s.read])) if s.read else 0.0
        out.append({"p": round(s.probability, 5), "mean": round(mean, 5),
                    "evidence": None if s.evidence is None else list(s.evidence)})
    return out


def features(reading: dict) -> dict[str, float]:
    """The signals a sentence's reading gives the calibration."""
    return {"support_best": reading["p"], "support_mean": reading["mean"]}


def receipt(reading: dict, sources: list[str]) -> dict | None:
    """The source sentence a claim was best supported by (or, if by none, came closest)."""
    if reading.get("evidence") is None:
        return None
    source, start, end = reading["evidence"]
    return {"source": source, "start": start, "end": end, "text": sources[source][start:end].strip(),
            "support": reading["p"]}
