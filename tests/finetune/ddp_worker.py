"""Run under torchrun: a few DDP steps of a tiny model; each rank writes a digest of its weights."""

import hashlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from backends.scratch.config import ModelConfig
from backends.scratch.model import DecoderLanguageModel
from finetune.trainer import TrainConfig, Trainer


def main(out: Path) -> None:
    torch.manual_seed(0)  # identical start on every rank; DDP keeps them identical
    model = DecoderLanguageModel(ModelConfig(vocab_size=50, emb_dim=32, num_heads=4, num_blocks=2, context_length=8))
    data = torch.randint(0, 50, (400,), generator=torch.Generator().manual_seed(3))

    def batch(gen):
        starts = torch.randint(0, 390, (4,), generator=gen)
        return torch.stack([data[s : s + 8] for s in starts]), torch.stack([data[s + 1 : s + 9] for s in starts])

    def loss_fn(m, b):
        logits = m(b[0])
        return F.cross_entropy(logits.reshape(-1, 50), b[1].reshape(-1)), b[1].numel()

    trainer = Trainer(model, TrainConfig(max_steps=3, eval_every=100, warmup_steps=1), out, loss_fn, batch,
                      evaluate=lambda m: {}, save_model=lambda m, folder: None, quiet=True)
    trainer.run()
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{trainer.dist.rank}.txt").write_text(f"{digest} {trainer.dist.world}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
