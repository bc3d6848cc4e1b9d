"""Shared fixtures: no network, isolated HEARTH_HOME, tiny and real models."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

import assistant  # noqa: F401  (sets the offline environment first)
from tests.helpers import build_tiny_llama, build_tokenizer

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(sock: socket.socket, address) -> None:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        if host == "localhost":
            return
    raise RuntimeError(f"test tried to open a network connection to {address!r}")


def _guarded_connect(self, address):
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_address(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Fail any test that opens a non-loopback socket."""
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


@pytest.fixture(scope="session")
def models_home(tmp_path_factory) -> Path:
    """A HEARTH_HOME shared by the session, holding the converted default model."""
    return tmp_path_factory.mktemp("models-home")


@pytest.fixture(autouse=True)
def hearth_home(tmp_path, models_home, monkeypatch) -> Path:
    """Every test gets its own HEARTH_HOME; prepared models are shared through a link."""
    home = tmp_path / "hearth-home"
    home.mkdir()
    (models_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(models_home / "models")
    monkeypatch.setenv("HEARTH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from backends.tokenizer import ChatTokenizer

    return ChatTokenizer.from_file(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_hf_backend(tiny_llama_dir):
    from backends.hf.backend import HFBackend

    return HFBackend(tiny_llama_dir)


@pytest.fixture(scope="session")
def smollm2_dir(models_home) -> Path:
    """The real bundled SmolLM2, converted once per test session."""
    from backends.hf.default_model import ensure_default_model

    old = os.environ.get("HEARTH_HOME")
    os.environ["HEARTH_HOME"] = str(models_home)
    try:
        return ensure_default_model()
    finally:
        if old is None:
            os.environ.pop("HEARTH_HOME")
        else:
            os.environ["HEARTH_HOME"] = old


@pytest.fixture(scope="session")
def smollm2_backend(smollm2_dir):
    from backends.hf.backend import HFBackend

    return HFBackend(smollm2_dir)


@pytest.fixture(scope="session")
def embedder():
    """The real bundled MiniLM embedder, loaded once."""
    from retrieval.embedder import Embedder

    e = Embedder()
    e.model  # noqa: B018  (load now)
    return e


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF with one text page per entry (fpdf2)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path
