"""The chat UI's widgets: input, message, sources, status bar."""

from __future__ import annotations

from textual import events
from textual.containers import Vertical
from textual.message import Message as TMessage
from rich.markdown import Markdown as RichMarkdown
from textual.widgets import Markdown, Static, TextArea
from textual.widgets._markdown import MarkdownBlock

from tui.commands import complete


class ChatInput(TextArea):
    """Multi-line input: Enter sends, Ctrl+J or Shift+Enter adds a line, Up recalls, Tab completes."""

    class Submitted(TMessage):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.sent: list[str] = []
        self._recall = 0

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            text = self.text.strip()
            if text:
                self.sent.append(text)
                self._recall = 0
                self.post_message(self.Submitted(text))
                self.clear()
            return
        if event.key in ("ctrl+j", "shift+enter"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        if event.key == "up" and (not self.text or self._recall) and self.sent:
            event.prevent_default()
            event.stop()
            self._recall = min(self._recall + 1, len(self.sent))
            self.load_text(self.sent[-self._recall])
            self.move_cursor(self.document.end)
            return
        if event.key == "tab" and self.text.startswith("/") and " " not in self.text:
            event.prevent_default()
            event.stop()
            options = complete(self.text.strip())
            if len(options) == 1:
                self.load_text(options[0] + " ")
                self.move_cursor(self.document.end)
            elif options:
                self.app.notify("  ".join(options), title="commands")
            return
        await super()._on_key(event)


class MessageBox(Vertical):
    """One message: a header line, its Markdown body, and (for grounded answers) its sources."""

    def __init__(self, role: str, content: str = "", header: str = "", **kwargs) -> None:
        super().__init__(classes=f"message {role}", **kwargs)
        self.role = role
        self.header_text = header
        self.body = Markdown(content, classes="body")
        self.footer = Static("", classes="message-footer")

    def compose(self):
        yield Static(self.header_text, classes="message-header")
        yield self.body
        yield self.footer

    def set_header(self, text: str) -> None:
        self.header_text = text
        if self.is_mounted:
            self.query_one(".message-header", Static).update(text)

    def set_footer(self, text: str) -> None:
        self.footer.update(text)
        self.footer.display = bool(text)


class ReplyStream:
    """Streams a reply into a MessageBox through Textual's Markdown stream.

    Textual lays out every widget on every refresh, and each Markdown block is a widget, so a long
    reply would make each new token cost more. Finished blocks far above the end are therefore
    frozen into one pre-rendered widget per group; at the end the whole reply becomes one Markdown
    widget again, exactly as it shows when the conversation is reopened.
    """

    LIVE_BLOCKS = 16  # blocks kept live at the end of the reply (more than a screenful)
    FREEZE_BLOCKS = 8  # blocks frozen together into one widget

    def __init__(self, box: MessageBox) -> None:
        self.box = box
        self.body = box.body
        self.frozen: list[Static] = []
        self._stream = Markdown.get_stream(box.body)

    async def write(self, text: str) -> None:
        await self._stream.write(text)
        await self._freeze()

    async def _freeze(self) -> None:
        if len(self.body.children) <= self.LIVE_BLOCKS:
            return
        async with self.body.lock:  # the stream appends under the same lock
            blocks = [c for c in self.body.children if isinstance(c, MarkdownBlock)]
            if len(blocks) <= self.LIVE_BLOCKS:
                return
            old = blocks[: self.FREEZE_BLOCKS]
            first, end = old[0].source_range[0], blocks[self.FREEZE_BLOCKS].source_range[0]
            text = "".join(self.body.source.splitlines(keepends=True)[first:end])
            frozen = Static(RichMarkdown(text, code_theme="monokai"), classes="frozen")
            self.frozen.append(frozen)
            await self.box.mount(frozen, before=self.body)
            await self.body.remove_children(old)

    async def stop(self, final: str | None = None) -> None:
        """End the stream; final (the stored, checked answer) replaces the streamed text if given."""
        await self._stream.stop()
        if self.frozen or (final is not None and final != self.body.source):
            for widget in self.frozen:
                await widget.remove()
            self.frozen = []
            await self.body.update(self.body.source if final is None else final)
