"""Modal screens: help, a one-line prompt, and the source viewer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Markdown, OptionList
from textual.widgets.option_list import Option

from tui.commands import help_markdown


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(help_markdown())


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text (rename, system prompt, edit)."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__()
        self.title_text, self.value = title, value

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Label(self.title_text)
            yield Input(value=self.value, id="prompt-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class SourcesScreen(ModalScreen[None]):
    """The numbered sources of an answer; selecting one shows its chunk text."""

    BINDINGS = [Binding("escape", "dismiss", "close")]

    def __init__(self, sources: list[dict]) -> None:
        super().__init__()
        self.sources = sources

    def compose(self) -> ComposeResult:
        with Vertical(id="sources"):
            yield OptionList(*[Option(f"[{s['rank']}] {s['path']}:{s['line']} {s.get('heading') or ''}", id=str(i))
                               for i, s in enumerate(self.sources)], id="source-list")
            yield Markdown(self._chunk(0) if self.sources else "No sources.", id="source-text")

    def _chunk(self, i: int) -> str:
        s = self.sources[i]
        return f"**[{s['rank']}] {s['path']}** (line {s['line']})\n\n{s['text']}"

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.query_one("#source-text", Markdown).update(self._chunk(int(event.option.id)))
