"""The Hearth terminal chat app (Textual).

The UI is up at once; the model loads in a worker thread, and so does every reply, so the UI never
blocks. Everything goes through the conversation manager and the history store.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, ListItem, ListView, Label, Static

from assistant.config import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SYSTEM_PROMPT
from assistant.errors import HearthError
from tui.commands import COMMANDS, parse
from tui.screens import HelpScreen, PromptScreen, SourcesScreen
from tui.widgets import ChatInput, MessageBox, ReplyStream, marked_answer, sources_text

BackendLoader = Callable[[str, "str | None", "str | None"], object]


def default_loader(backend: str, model: str | None, adapter: str | None):
    """Load a backend through the registry (the default model is prepared on first use)."""
    from backends.registry import load_backend

    return load_backend(backend, model, adapter)


class HearthCommands(Provider):
    """Command palette entries: every slash command."""

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in COMMANDS:
            score = matcher.match(f"{command.name} {command.help}")
            if score > 0:
                yield Hit(score, matcher.highlight(f"{command.name} — {command.help}"),
                          lambda c=command: self.app.palette_command(c.name, c.args), help=command.args)


class HearthApp(App):
    """Sidebar of conversations, the conversation, a multi-line input and a status bar."""

    TITLE = "Hearth"
    COMMANDS = App.COMMANDS | {HearthCommands}
    CSS = """
    #sidebar { width: 32; border-right: solid $primary-darken-2; }
    #search { margin: 0 0 1 0; }
    #conversations { height: 1fr; }
    #chat { height: 1fr; padding: 0 1; }
    #input { height: auto; max-height: 10; min-height: 3; border: round $primary; }
    #status { height: 1; background: $primary-darken-3; color: $text; padding: 0 1; }
    .message { height: auto; margin: 0 0 1 0; }
    .message-header { color: $text-muted; text-style: bold; }
    .user .message-header { color: $accent; }
    .message-footer { color: $text-muted; display: none; }
    .body { margin: 0; padding: 0; }
    #help, #sources { width: 90%; height: 85%; border: round $primary; background: $surface; }
    #prompt { width: 70; height: auto; border: round $primary; background: $surface; padding: 1; }
    HelpScreen, PromptScreen, SourcesScreen { align: center middle; }
    #source-list { height: 8; }
    """
    BINDINGS = [
        Binding("escape", "stop", "stop reply", show=True),
        Binding("ctrl+n", "new", "new chat"),
        Binding("ctrl+r", "regenerate", "regenerate"),
        Binding("ctrl+e", "edit", "edit last", priority=True),
        Binding("f2", "rename", "rename"),
        Binding("ctrl+f", "focus_search", "search"),
        Binding("f1", "help", "help"),
        Binding("ctrl+q", "quit", "quit", priority=True),
    ]

    def __init__(self, store=None, loader: BackendLoader | None = None, backend: str = "hf",
                 model: str | None = None, adapter: str | None = None, docs: str | None = None,
                 conversation_id: int | None = None, export_dir: Path | None = None) -> None:
        super().__init__()
        self._store = store
        self.loader = loader or default_loader
        self.settings = {"backend": backend, "model": model, "adapter": adapter, "docs": docs,
                         "preset": "precise", "sampling": None, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
                         "on_unsupported": "annotate", "check": False}
        self.system_prompt = DEFAULT_SYSTEM_PROMPT
        self.start_conversation = conversation_id
        self.export_dir = export_dir or Path.cwd()
        self.backend = None
        self.session = None
        self.collection = None
        self.conversation_id: int | None = None
        self.cancel: threading.Event | None = None
        self.generating = False
        self.status_note = "starting"
        self.last_timings = None
        self.first_frame_at: float | None = None

    # -- layout -----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Input(placeholder="search conversations", id="search")
                yield ListView(id="conversations")
            with Vertical(id="main"):
                yield VerticalScroll(id="chat")
                yield ChatInput(id="input")
        yield Static("", id="status")

    @property
    def store(self):
        if self._store is None:
            from assistant.store import Store

            self._store = Store()
        return self._store

    def on_mount(self) -> None:
        self.query_one("#input", ChatInput).focus()
        self.call_after_refresh(self._first_frame)
        try:
            self.refresh_sidebar()
            if self.start_conversation is not None:
                self.open_conversation(self.start_conversation)
        except HearthError as exc:
            self.show_error(str(exc))
        self.update_status("loading model…")
        self.load_backend()

    def _first_frame(self) -> None:
        self.first_frame_at = time.perf_counter()
        marker = os.environ.get("HEARTH_FIRST_FRAME_FILE")  # set by `hearth bench tui`
        if marker:
            Path(marker).write_text(repr(time.time()))
            self.exit()

    # -- backend and session ----------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="load")
    def load_backend(self) -> None:
        s = self.settings
        self.call_from_thread(self.update_status, f"loading {s['backend']} model {s['model'] or '(default)'}…")
        try:
            backend = self.loader(s["backend"], s["model"], s["adapter"])
        except (HearthError, OSError, ValueError) as exc:
            self.call_from_thread(self.show_error, f"cannot load the model: {exc}")
            return
        self.call_from_thread(self._backend_ready, backend)

    def _backend_ready(self, backend) -> None:
        self.backend = backend
        if self.session is None:
            self.session = self._new_session()
            if self.conversation_id is not None:
                self._bind_session(self.conversation_id)
        else:
            self.session.backend = backend
        self.update_status("ready")

    def _new_session(self):
        from assistant.conversation import ChatSession

        return ChatSession(backend=self.backend, store=self.store, system_prompt=self.system_prompt,
                           sampling=self._sampling(), max_new_tokens=self.settings["max_new_tokens"],
                           collection=self.collection, **self._check_options())

    def _bind_session(self, conversation_id: int) -> None:
        from assistant.conversation import ChatSession

        self.session = ChatSession.resume(self.backend, self.store, conversation_id, sampling=self._sampling(),
                                          max_new_tokens=self.settings["max_new_tokens"], collection=self.collection,
                                          **self._check_options())

    def _check_options(self) -> dict:
        return {"on_unsupported": self.settings["on_unsupported"], "check_answers": self.settings["check"]}

    def _sampling(self):
        from backends.sampling import PRESETS, SamplingParams

        if self.settings["sampling"]:
            return SamplingParams.from_dict(self.settings["sampling"])
        return PRESETS[self.settings["preset"]]

    # -- sidebar ----------------------------------------------------------------------------------
    def refresh_sidebar(self, query: str | None = None) -> None:
        view = self.query_one("#conversations", ListView)
        view.clear()
        for conv in self.store.list_conversations(query=query or None):
            item = ListItem(Label(conv.title[:28] or "untitled"))
            item.conversation_id = conv.id  # no DOM id: clear() removes the old items asynchronously
            view.append(item)

    @on(Input.Changed, "#search")
    def _search(self, event: Input.Changed) -> None:
        self.refresh_sidebar(event.value.strip())

    @on(ListView.Selected, "#conversations")
    def _selected(self, event: ListView.Selected) -> None:
        conversation_id = getattr(event.item, "conversation_id", None)
        if conversation_id is not None:
            self.open_conversation(conversation_id)

    def open_conversation(self, conversation_id: int) -> None:
        """Show a stored conversation and make it the current one."""
        if self.generating:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        conv = self.store.get_conversation(conversation_id)
        self.conversation_id = conv.id
        self.system_prompt = conv.system_prompt
        saved = conv.settings or {}
        for key in ("preset", "sampling", "docs", "max_new_tokens", "on_unsupported", "check"):
            if key in saved:
                self.settings[key] = saved[key]
        if self.backend is not None:
            self._bind_session(conv.id)
        self.render_messages(self.store.messages(conv.id))
        self._apply_docs(self.settings.get("docs"), quiet=True)
        self.update_status(f"opened “{conv.title}”")

    def render_messages(self, messages: Iterable) -> None:
        chat = self.query_one("#chat", VerticalScroll)
        chat.remove_children()
        for m in messages:
            if m.role == "system":
                continue
            box = MessageBox(m.role, marked_answer(m.content, m.checks) if m.role == "assistant" else m.content,
                             self._header(m))
            chat.mount(box)
            if m.role == "assistant" and (m.sources or m.checks):
                box.call_after_refresh(box.set_footer, sources_text(m.sources, m.checks))
        chat.scroll_end(animate=False)

    @staticmethod
    def _header(m) -> str:
        if m.role == "user":
            return "You"
        note = {"stop": "", "complete": "", "length": " · cut at max tokens", "cancelled": " · stopped",
                "interrupted": " · interrupted",
                "error": " · error"}.get(m.status, f" · {m.status}")
        return f"Hearth · {m.backend or '?'}: {Path(str(m.model or '?').split(' ')[0]).name}{note}"

    # -- sending ----------------------------------------------------------------------------------
    @on(ChatInput.Submitted)
    async def _submitted(self, event: ChatInput.Submitted) -> None:
        command = parse(event.text)
        if command is not None:
            await self.run_slash(*command)
            return
        self.send(event.text)

    def send(self, text: str) -> None:
        """Send a user message and stream the reply."""
        if self.generating:
            self.notify("A reply is still streaming (Esc stops it).", severity="warning")
            return
        if self.session is None:
            self.notify("The model is still loading; try again in a moment.", severity="warning")
            self.query_one("#input", ChatInput).load_text(text)
            return
        chat = self.query_one("#chat", VerticalScroll)
        chat.mount(MessageBox("user", text, "You"))
        self._stream(lambda cancel: self.session.send(text, cancel))

    def _stream(self, start) -> None:
        chat = self.query_one("#chat", VerticalScroll)
        box = MessageBox("assistant", "", f"Hearth · {self.backend.name}: …")
        chat.mount(box)
        chat.anchor()  # follow the stream while the user stays at the bottom
        self.generating = True
        self.cancel = threading.Event()
        self.update_status("generating… (Esc stops)")
        self.generate(start, box, self.cancel)

    @work(thread=True, exclusive=True, group="generate")
    def generate(self, start, box: MessageBox, cancel: threading.Event) -> None:
        from assistant.conversation import DoneEvent, TokenEvent

        stream = self.call_from_thread(ReplyStream, box)
        try:
            for event in start(cancel):
                if isinstance(event, TokenEvent):
                    if event.text:
                        self.call_from_thread(stream.write, event.text)
                elif isinstance(event, DoneEvent):
                    self.call_from_thread(self._finish, box, stream, event)
        except (HearthError, ValueError) as exc:
            self.call_from_thread(self._failed, box, stream, str(exc))

    async def _finish(self, box: MessageBox, stream, done) -> None:
        message = done.message
        await stream.stop(marked_answer(message.content, message.checks))
        box.set_header(self._header(message))
        if message.sources or message.checks:
            box.set_footer(sources_text(message.sources, message.checks))
        self.generating = False
        self.last_timings = done.timings
        if self.conversation_id is None and self.session.conversation_id is not None:
            self.conversation_id = self.session.conversation_id
        self._save_settings()
        self.refresh_sidebar(self.query_one("#search", Input).value.strip())
        self.update_status({"cancelled": "stopped", "error": f"error: {done.error}"}.get(done.finish_reason, "ready"))

    async def _failed(self, box: MessageBox, stream, error: str) -> None:
        await stream.stop()
        await box.remove()
        self.generating = False
        self.show_error(error)

    def action_stop(self) -> None:
        if self.generating and self.cancel is not None:
            self.cancel.set()

    async def action_quit(self) -> None:
        """Quit; a reply in progress is stopped and stored as it stands."""
        if self.generating and self.cancel is not None:
            self.cancel.set()
            for worker in self.workers:
                if worker.group == "generate":
                    await worker.wait()
        self.exit()

    # -- actions ----------------------------------------------------------------------------------
    def action_new(self) -> None:
        if self.generating:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        self.conversation_id = None
        self.system_prompt = DEFAULT_SYSTEM_PROMPT
        if self.backend is not None:
            self.session = self._new_session()
        self.query_one("#chat", VerticalScroll).remove_children()
        self.update_status("new conversation")

    def action_regenerate(self) -> None:
        if self.generating or self.session is None or not self.session.messages:
            return
        chat = self.query_one("#chat", VerticalScroll)
        boxes = list(chat.query(MessageBox))
        if boxes and boxes[-1].role == "assistant":
            boxes[-1].remove()
        self._stream(lambda cancel: self.session.regenerate(cancel))

    def action_edit(self) -> None:
        if self.generating or self.session is None:
            return
        users = [m for m in self.session.messages if m.role == "user"]
        if not users:
            return

        def resend(text: str | None) -> None:
            if not text:
                return
            self._drop_last_exchange()
            self.send(text)

        self.push_screen(PromptScreen("Edit and resend the last message", users[-1].content), resend)

    def _drop_last_exchange(self) -> None:
        """Delete the last user message and anything after it (store, session, view)."""
        messages = self.session.messages
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        for m in messages[last_user:]:
            if m.id is not None:
                self.store.delete_message(m.id)
        del messages[last_user:]
        self.render_messages(messages)

    def action_rename(self) -> None:
        if self.conversation_id is None:
            self.notify("Send a message first.", severity="warning")
            return
        conv = self.store.get_conversation(self.conversation_id)

        def done(title: str | None) -> None:
            if title:
                self.store.update_conversation(self.conversation_id, title=title)
                self.refresh_sidebar()

        self.push_screen(PromptScreen("Rename conversation", conv.title), done)

    def action_focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def palette_command(self, name: str, args: str) -> None:
        """A palette choice: run it, or put it in the input when it needs an argument."""
        if args and not args.startswith("["):
            box = self.query_one("#input", ChatInput)
            box.load_text(name + " ")
            box.move_cursor(box.document.end)
            box.focus()
        else:
            self.run_worker(self.run_slash(name, ""), exclusive=False)

    # -- slash commands ---------------------------------------------------------------------------
    async def run_slash(self, name: str, arg: str) -> None:
        """Run one slash command; bad input becomes a message, never a crash."""
        handler = getattr(self, f"cmd_{name.lstrip('/').replace('-', '_')}", None)
        if handler is None:
            self.show_error(f"unknown command {name}; /help lists them")
            return
        try:
            result = handler(arg)
            if hasattr(result, "__await__"):
                await result
        except (HearthError, ValueError, OSError) as exc:
            self.show_error(str(exc))

    def cmd_help(self, arg: str) -> None:
        self.action_help()

    def cmd_new(self, arg: str) -> None:
        self.action_new()

    def cmd_regen(self, arg: str) -> None:
        self.action_regenerate()

    def cmd_edit(self, arg: str) -> None:
        self.action_edit()

    def cmd_system(self, arg: str) -> None:
        if not arg:
            self.notify(self.system_prompt, title="system prompt")
            return
        self.system_prompt = arg
        if self.session is not None:
            self.session.system_prompt = arg
        if self.conversation_id is not None:
            self.store.update_conversation(self.conversation_id, system_prompt=arg)
        self.update_status("system prompt set")

    def cmd_preset(self, arg: str) -> None:
        from backends.sampling import PRESETS

        if arg not in PRESETS:
            raise HearthError(f"unknown preset {arg!r}; choose one of {', '.join(PRESETS)}")
        self.settings.update(preset=arg, sampling=None)
        self._settings_changed(f"preset {arg}")

    def cmd_temp(self, arg: str) -> None:
        from backends.sampling import SamplingParams

        try:
            value = float(arg)
        except ValueError:
            raise HearthError("/temp needs a number, e.g. /temp 0.7") from None
        params = self._sampling().to_dict() | {"temperature": value}
        SamplingParams.from_dict(params)  # validates
        self.settings["sampling"] = params
        self._settings_changed(f"temperature {value}")

    def cmd_check(self, arg: str) -> None:
        from assistant.conversation import POLICIES

        if arg in POLICIES:
            self.settings["on_unsupported"] = arg
        elif arg in ("on", "off"):
            self.settings["check"] = arg == "on"
        else:
            raise HearthError(f"/check takes {'|'.join(POLICIES)} (grounded answers below the threshold) "
                              "or on|off (check answers without documents)")
        if self.session is not None:
            self.session.on_unsupported = self.settings["on_unsupported"]
            self.session.check_answers = self.settings["check"]
        self._save_settings()
        self.update_status(f"check: {arg}")

    def _settings_changed(self, note: str) -> None:
        if self.session is not None:
            self.session.sampling = self._sampling()
        self._save_settings()
        self.update_status(note)

    def _save_settings(self) -> None:
        if self.conversation_id is None:
            return
        backend = self.backend
        self.store.update_conversation(self.conversation_id, settings=dict(self.settings),
                                       backend=backend.name if backend else None,
                                       model=backend.model_id if backend else None)

    def cmd_backend(self, arg: str) -> None:
        if arg not in ("hf", "scratch"):
            raise HearthError("/backend takes hf or scratch")
        self.settings["backend"] = arg
        if arg == "scratch":
            self.settings["adapter"] = None
        self.load_backend()

    def cmd_model(self, arg: str) -> None:
        if not arg:
            raise HearthError("/model needs a folder (or 'default')")
        self.settings["model"] = None if arg == "default" else str(Path(arg).expanduser())
        self.load_backend()

    def cmd_adapter(self, arg: str) -> None:
        self.settings["adapter"] = None if arg in ("", "off") else str(Path(arg).expanduser())
        self.load_backend()

    def cmd_docs(self, arg: str) -> None:
        self._apply_docs(None if arg in ("", "off") else arg)
        self._save_settings()

    def _apply_docs(self, name: str | None, quiet: bool = False) -> None:
        if name is None:
            self.collection = None
        else:
            from retrieval.collection import Collection

            try:
                self.collection = Collection(name, create=False)
            except HearthError as exc:
                self.settings["docs"] = None
                self.collection = None
                self.show_error(str(exc))
                return
        self.settings["docs"] = name
        if self.session is not None:
            self.session.collection = self.collection
        if not quiet:
            self.update_status(f"documents: {name or 'off'}")

    def cmd_sources(self, arg: str) -> None:
        replies = [m for m in (self.session.messages if self.session else []) if m.role == "assistant"]
        if not replies or not replies[-1].sources:
            self.notify("The last answer has no sources.")
            return
        self.push_screen(SourcesScreen(replies[-1].sources))

    def cmd_clear(self, arg: str) -> None:
        if self.session is None:
            return
        for m in self.session.messages:
            if m.id is not None:
                self.store.delete_message(m.id)
        self.session.messages.clear()
        self.render_messages([])
        self.update_status("cleared")

    def cmd_delmsg(self, arg: str) -> None:
        if self.session is None or not self.session.messages:
            return
        m = self.session.messages.pop()
        if m.id is not None:
            self.store.delete_message(m.id)
        self.render_messages(self.session.messages)

    def cmd_rename(self, arg: str) -> None:
        if not arg:
            self.action_rename()
        elif self.conversation_id is not None:
            self.store.update_conversation(self.conversation_id, title=arg)
            self.refresh_sidebar()

    def cmd_delete(self, arg: str) -> None:
        if self.conversation_id is None:
            return
        self.store.delete_conversation(self.conversation_id)
        self.action_new()
        self.refresh_sidebar()

    def cmd_copy(self, arg: str) -> None:
        replies = [m for m in (self.session.messages if self.session else []) if m.role == "assistant"]
        if not replies:
            return
        text = replies[-1].content
        if arg == "code":
            blocks = text.split("```")[1::2]
            if not blocks:
                raise HearthError("the last reply has no code block")
            text = blocks[-1].split("\n", 1)[1] if "\n" in blocks[-1] else blocks[-1]
        self.copy_to_clipboard(text)
        self.update_status("copied")

    def cmd_export(self, arg: str) -> None:
        from assistant.export import export, to_chatml_record

        fmt, _, target = arg.partition(" ")
        fmt = fmt or "md"
        if fmt == "chatml-all":
            lines = [json.dumps(to_chatml_record(c, self.store.messages(c.id)), ensure_ascii=False)
                     for c in self.store.list_conversations()]
            path = Path(target) if target else self.export_dir / "hearth-conversations.jsonl"
            text = "\n".join(lines) + "\n"
        else:
            if self.conversation_id is None:
                raise HearthError("nothing to export yet")
            if fmt not in ("md", "json", "chatml"):
                raise HearthError("/export takes md, json, chatml or chatml-all")
            conv = self.store.get_conversation(self.conversation_id)
            suffix = {"md": "md", "json": "json", "chatml": "jsonl"}[fmt]
            path = Path(target) if target else self.export_dir / f"hearth-{conv.id}.{suffix}"
            text = export(conv, self.store.messages(conv.id), fmt) + "\n"
        from assistant.files import write_atomic

        write_atomic(path.expanduser(), text)
        self.update_status(f"exported {path}")
        self.notify(f"Exported to {path}")

    # -- status -----------------------------------------------------------------------------------
    def show_error(self, text: str) -> None:
        self.notify(text, severity="error", timeout=8)
        self.update_status(f"error: {text}")

    def update_status(self, note: str | None = None) -> None:
        if note is not None:
            self.status_note = note
        parts = []
        if self.backend is not None:
            parts.append(f"{self.backend.name}: {Path(str(self.backend.model_id).split(' ')[0]).name}")
        else:
            parts.append(f"{self.settings['backend']}: …")
        parts.append(f"docs: {self.settings.get('docs') or 'off'}")
        plan = self.session.last_plan if self.session is not None else None
        if self.backend is not None:
            parts.append(f"ctx {len(plan.ids) if plan else 0}/{self.backend.context_length}")
        t = self.last_timings
        if t is not None and t.ttft_s is not None:
            parts.append(f"ttft {t.ttft_s:.2f}s" + (f" · {t.decode_tok_s:.1f} tok/s" if t.decode_tok_s else ""))
        parts.append(self.status_note)
        self.query_one("#status", Static).update(" | ".join(parts))
