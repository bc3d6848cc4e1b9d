"""The model configuration: one small dataclass for the book's model and the Llama family."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

FORMAT = "hearth-scratch"


@dataclass
class ModelConfig:
    """Shape of a DecoderLanguageModel."""

    vocab_size: int
    emb_dim: int = 128
    num_heads: int = 8
    num_kv_heads: int | None = None  # grouped-query attention; None means num_heads
    num_blocks: int = 2
    mlp: str = "relu"  # "relu": the book's 4x MLP; "swiglu": Llama's gated MLP
    mlp_hidden: int | None = None  # None means 4 * emb_dim
    mlp_bias: bool = True
    attn_bias: bool = False  # bias on W_Q, W_K, W_V (Qwen2 has it); W_O never has one
    rope_theta: float = 10000.0
    rope_pairing: str = "interleaved"  # "interleaved" (the book) or "half" (Llama's rotate_half)
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    final_norm: bool = False
    context_length: int = 30
    head_dim: int | None = None  # None means emb_dim // num_heads

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.head_dim is None:
            if self.emb_dim % self.num_heads:
                raise ValueError("emb_dim must be divisible by num_heads")
            self.head_dim = self.emb_dim // self.num_heads
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.emb_dim
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.mlp not in ("relu", "swiglu"):
            raise ValueError(f"mlp must be 'relu' or 'swiglu', got {self.mlp!r}")
        if self.rope_pairing not in ("interleaved", "half"):
            raise ValueError(f"rope_pairing must be 'interleaved' or 'half', got {self.rope_pairing!r}")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for RoPE")

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def book(vocab_size: int = 32011) -> ModelConfig:
    """The Hundred-Page Language Models Book's decoder."""
    return ModelConfig(vocab_size=vocab_size, emb_dim=128, num_heads=8, num_blocks=2, mlp="relu",
                       mlp_bias=True, attn_bias=False, tie_embeddings=False, final_norm=False,
                       context_length=30)


def small(vocab_size: int) -> ModelConfig:
    """A Llama-style model of about 10 M parameters (plus embeddings) for CPU pretraining."""
    return ModelConfig(vocab_size=vocab_size, emb_dim=384, num_heads=6, num_kv_heads=6, num_blocks=6,
                       mlp="swiglu", mlp_hidden=1024, mlp_bias=False, rope_pairing="half",
                       tie_embeddings=True, final_norm=True, context_length=256)


PRESETS = {"book": book, "small": small}
