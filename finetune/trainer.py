"""The training loop shared by pretraining and SFT: AdamW, warm-up + cosine, clipping,
accumulation, periodic evaluation, time/step caps, exact resume, and DDP under torchrun.
Training runs on the GPU when there is one (under torchrun, each rank on its LOCAL_RANK's GPU).

Batches are a pure function of (seed, step, micro-step, rank), and the optimizer state is saved
with the weights, so a run stopped at step k and resumed continues exactly as if never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from assistant.errors import HearthError

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.safetensors"


@dataclass
class TrainConfig:
    """Optimisation settings (saved with every checkpoint)."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    max_steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    weight_decay: float = 0.1
    clip: float = 1.0
    eval_every: int = 100
    seed: int = 0
    time_budget_min: float | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "eval_every"):
            if getattr(self, name) < 1:
                raise HearthError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise HearthError(f"--lr must be a positive number, got {self.lr}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise HearthError(f"--time-budget must be a positive number of minutes, got {self.time_budget_min}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The RNG that picks one micro-batch: a function of the run's position only."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_009 + micro) * 101 + rank)


def training_device() -> torch.device:
    """This process's GPU when there is one (torchrun's LOCAL_RANK picks it), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def to_device(batch, device: torch.device):
    """A batch (a tensor, or a tuple/list of them) on the device."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    return type(batch)(to_device(b, device) for b in batch)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class Distributed:
    """torchrun's environment: rank, world size, and the process group (nccl with a GPU per rank, else gloo)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not torch.distributed.is_initialized():
            # nccl needs a GPU per rank; ranks that share a GPU (or have none) talk through gloo
            nccl = torch.cuda.is_available() and self.world <= torch.cuda.device_count()
            torch.distributed.init_process_group("nccl" if nccl else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


@dataclass
class TrainState:
    step: int = 0
    tokens: int = 0
    history: list[dict] = field(default_factory=list)  # {"step", "loss"} and eval entries
    best_val: float | None = None
    bad_evals: int = 0


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Optimizer state as safetensors (tensors) + the param groups in trainer_state.json."""
    state = optimizer.state_dict()
    tensors = {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["torch_rng"] = torch.get_rng_state()
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, path)


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path, groups: list[dict]) -> None:
    tensors = load_file(path)
    torch.set_rng_state(tensors.pop("torch_rng"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


class Trainer:
    """Runs the loop; the task (pretraining or SFT) supplies loss, batches, evaluation and saving."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, out: Path,
                 loss_fn: Callable[[torch.nn.Module, object], tuple[torch.Tensor, int]],
                 next_batch: Callable[[torch.Generator], object],
                 evaluate: Callable[[torch.nn.Module], dict],
                 save_model: Callable[[torch.nn.Module, Path], None],
                 on_eval: Callable[[torch.nn.Module, dict], None] | None = None,
                 patience: int | None = None, quiet: bool = False):
        self.device = training_device()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # before the process group: nccl binds to it
        self.dist = Distributed()
        self.cfg, self.out = cfg, Path(out)
        self.raw_model = model.to(self.device)  # before the optimizer, so its state lives there too
        self.model = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.loss_fn, self.next_batch, self.evaluate = loss_fn, next_batch, evaluate
        self.save_model, self.on_eval, self.patience = save_model, on_eval, patience
        self.quiet = quiet or not self.dist.main
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
        self.state = TrainState()
        self.last_eval: dict = {}

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> None:
        """Weights, optimizer, RNG and position, written by rank 0."""
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.save_model(self.raw_model, self.out)
            save_optimizer(self.optimizer, self.out / OPTIM_FILE)
            payload = {"state": asdict(self.state), "config": asdict(self.cfg),
                       "param_groups": self.optimizer.state_dict()["param_groups"]}
            tmp = self.out / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(payload))
            tmp.replace(self.out / STATE_FILE)
        self.dist.barrier()

    def restore(self, folder: Path) -> None:
        """Continue from a checkpoint written by save() (the weights are loaded by the caller)."""
        payload = json.loads((Path(folder) / STATE_FILE).read_text())
        self.state = TrainState(**payload["state"])
        load_optimizer(self.optimizer, Path(folder) / OPTIM_FILE, payload["param_groups"])

    # -- loop -------------------------------------------------------------------------------------
    def _eval(self) -> dict:
        self.model.eval()
        with torch.no_grad():
            result = self.evaluate(self.raw_model)
        self.model.train()
        self.last_eval = result
        self.state.history.append({"step": self.state.step, **result})
        if self.on_eval and self.dist.main:
            self.on_eval(self.raw_model, result)
        return result

    def run(self, stop: Callable[[], bool] | None = None) -> dict:
        """Train until max_steps, the time budget, or early stopping; always end with eval + save."""
        from tqdm import tqdm

        cfg = self.cfg
        started = time.perf_counter()
        budget = cfg.time_budget_min * 60 if cfg.time_budget_min else None
        bar = tqdm(total=cfg.max_steps, initial=self.state.step, disable=self.quiet, file=sys.stderr,
                   unit="step", dynamic_ncols=True)
        self.model.train()
        tokens_at_start = self.state.tokens
        while self.state.step < cfg.max_steps:
            step = self.state.step
            lr = lr_at(step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            total_loss, n_tokens = 0.0, 0
            for micro in range(cfg.grad_accum):
                batch = to_device(self.next_batch(batch_generator(cfg.seed, step, micro, self.dist.rank)), self.device)
                loss, tokens = self.loss_fn(self.model, batch)
                (loss / cfg.grad_accum).backward()
                total_loss += loss.item() / cfg.grad_accum
                n_tokens += tokens
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
            self.state.tokens += n_tokens * self.dist.world
            self.state.history.append({"step": self.state.step, "loss": total_loss})
            elapsed = time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss:.3f}", lr=f"{lr:.2e}",
                            tok_s=f"{(self.state.tokens - tokens_at_start) / max(elapsed, 1e-9):.0f}", refresh=False)
            out_of_time = budget is not None and elapsed > budget
            if self.state.step % cfg.eval_every == 0 and self.state.step < cfg.max_steps and not out_of_time:
                result = self._eval()
                line = f"step {self.state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items())
                bar.write(line, file=sys.stderr)  # stdout is the result (--json)
                if self._early_stop(result):
                    bar.write(f"early stop: validation loss did not improve for {self.patience} evaluations",
                              file=sys.stderr)
                    break
                self.save()
            if out_of_time or (stop is not None and stop()):
                break
        bar.close()
        result = self._eval()
        self.save()
        wall = time.perf_counter() - started
        trained = self.state.tokens - tokens_at_start
        return {"out": str(self.out), "steps": self.state.step, "tokens": self.state.tokens, "wall_s": round(wall, 2),
                "tokens_per_s": round(trained / wall, 1) if wall else 0.0, "val_loss": result.get("val_loss"),
                "val_ppl": result.get("val_ppl"), "val_bpc": result.get("val_bpc")}

    def _early_stop(self, result: dict) -> bool:
        if self.patience is None or "val_loss" not in result:
            return False
        if self.state.best_val is None or result["val_loss"] < self.state.best_val:
            self.state.best_val, self.state.bad_evals = result["val_loss"], 0
            return False
        self.state.bad_evals += 1
        return self.state.bad_evals >= self.patience
