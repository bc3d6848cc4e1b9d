"""GGUF files (the format people download for llama.cpp and Ollama) as model folders both backends load.

transformers reads a GGUF file, dequantising its weights to float, in seconds to minutes; we do that
once per file and keep a safetensors folder (with the tokenizer and the chat template the file
carries) under HEARTH_HOME/models/gguf/, named by the file's content: the same file copied or
renamed is not converted again, and a changed file is. The bundled default model is converted the
same way (backends/hf/default_model.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from assistant.config import ensure_dir, models_dir
from assistant.errors import ModelNotFound
from assistant.files import write_atomic

log = logging.getLogger(__name__)

ARCHITECTURES = ("llama", "mistral", "qwen2")  # what both backends run (backends/scratch/weights.LLAMA_TYPES)
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
SOURCE_RECORD = "hearth_source.json"  # in a converted folder: which GGUF file it came from
_INDEX = "index.json"  # file path, size and mtime -> content hash, so a known file is not read again


def gguf_dir() -> Path:
    """Where converted GGUF files live."""
    return models_dir() / "gguf"


def is_prepared(folder: Path) -> bool:
    """True when a converted model folder is complete on disk."""
    return all((folder / name).is_file() for name in REQUIRED)


def is_gguf(path: Path) -> bool:
    """Whether a path is a GGUF file (by its magic bytes, whatever its name)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def architecture(path: Path) -> str:
    """The model family a GGUF file declares (general.architecture)."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields.get("general.architecture")
    except Exception as exc:  # gguf raises ValueError and others on a truncated or foreign file
        raise ModelNotFound(f"cannot read the GGUF file {path}: {exc}") from exc
    if field is None:
        raise ModelNotFound(f"{path} does not say which architecture it holds (no general.architecture)")
    return str(field.contents())


def _hash_index() -> dict:
    try:
        return json.loads((gguf_dir() / _INDEX).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def remember_hash(path: Path, sha256: str) -> None:
    """Record a file's sha256 by path, size and mtime (content_hash then trusts it)."""
    stat = path.stat()
    index = _hash_index()
    index[str(path.resolve())] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
    ensure_dir(gguf_dir())
    write_atomic(gguf_dir() / _INDEX, json.dumps(index, indent=1))


def known_hash(path: Path) -> str | None:
    """The remembered sha256 of the file, if it has not changed (size, mtime) since; else None."""
    stat = path.stat()
    known = _hash_index().get(str(path.resolve()))
    if known and known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
        return known["sha256"]
    return None


def content_hash(path: Path, report: Callable[[str], None]) -> str:
    """sha256 of the file, remembered by path, size and mtime (a multi-GB file is read once)."""
    known = known_hash(path)
    if known:
        return known
    stat = path.stat()
    report(f"  identifying {path.name} ({stat.st_size / 2**20:.0f} MiB)")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    remember_hash(path, digest.hexdigest())
    return digest.hexdigest()


def source_of(folder: Path) -> Path | None:
    """The GGUF file a converted model folder came from, if that file is still there (the bundled
    default model's is the package's file, wherever the package is installed now)."""
    from backends.hf.default_model import bundled_gguf, default_model_dir

    folder = Path(folder)
    if folder.resolve() == default_model_dir().resolve():
        return bundled_gguf()
    try:
        path = Path(json.loads((folder / SOURCE_RECORD).read_text())["gguf"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_file() else None


def converted_folder(path: Path, report: Callable[[str], None] | None = None) -> Path:
    """The model folder of a GGUF file, converting it on first use."""
    report = report or log.info
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"GGUF file {path} does not exist.")
    target = gguf_dir() / content_hash(path, report)[:16]  # by content: a renamed copy is the same model
    if is_prepared(target):
        return target
    arch = architecture(path)
    if arch not in ARCHITECTURES:
        raise ModelNotFound(f"{path.name} holds a {arch!r} model; Hearth runs GGUF files of the "
                            f"{', '.join(ARCHITECTURES)} families")
    report(f"Converting {path.name} for Hearth (once; kept in {target})...")
    convert(path, target, report)
    return target


def prepared_folder(path: Path, report: Callable[[str], None] | None = None) -> Path:
    """The folder of a GGUF file's tokenizer and chat template, without weights (what the scratch engine
    needs beside the file itself, which it maps as it is), made on first use in about a second."""
    report = report or log.info
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"GGUF file {path} does not exist.")
    target = gguf_dir() / content_hash(path, report)[:16]
    if (target / "tokenizer.json").is_file():
        return target
    arch = architecture(path)
    if arch not in ARCHITECTURES:
        raise ModelNotFound(f"{path.name} holds a {arch!r} model; Hearth runs GGUF files of the "
                            f"{', '.join(ARCHITECTURES)} families")
    from transformers import AutoTokenizer

    report(f"Reading the tokenizer of {path.name} (once)...")
    ensure_dir(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        try:
            AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(tmp)
        except Exception as exc:  # transformers raises many kinds on a tokenizer it cannot read
            raise ModelNotFound(f"cannot read the tokenizer of {path}: {exc}") from exc
        (tmp / SOURCE_RECORD).write_text(json.dumps({"gguf": str(path.resolve())}))
        if not target.exists():
            tmp.rename(target)
        else:  # a folder with the tensor index already: add the tokenizer's files to it
            for item in tmp.iterdir():
                item.replace(target / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert(gguf: Path, target: Path, report: Callable[[str], None]) -> Path:
    """Write the GGUF file's weights (as floats), config, tokenizer and chat template into `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ensure_dir(target.parent)
    # Build in a temporary folder beside the target, then rename: a crash leaves no half model.
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        report("  reading and dequantising the weights")
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:  # transformers raises many kinds on an unsupported tensor type or layout
            raise ModelNotFound(f"cannot convert {gguf}: {exc}") from exc
        model.hf_quantizer = None  # the weights are plain floats now; save them as such
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        report("  writing safetensors")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_RECORD).write_text(json.dumps({"gguf": str(gguf.resolve())}))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report(f"Model ready in {target}")
    return target
