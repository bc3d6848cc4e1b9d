"""The Hearth terminal chat app (Textual).

The UI is up at once; the model loads in a worker thread, and so does every reply, so the UI never
blocks. Everything goes through the conversation manager and the history store.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from textual import on, work
from textual.worker import get_current_worker
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, ListItem, ListView, Label, Static

from assistant import present
from assistant.config import POLICIES
from assistant.errors import HearthError
from assistant.export import ALL, FORMATS, SUFFIXES
from assistant.settings import ChatSettings
from backends.params import PRESETS, SamplingParams
from backends.registry import BACKENDS
from tui.commands import COMMANDS, parse
from tui.screens import HelpScreen, PromptScreen, SourcesScreen
from tui.widgets import ChatInput, MessageBox, ReplyStream

BackendLoader = Callable[[ChatSettings], object]


def default_loader(settings: ChatSettings):
    """Load the settings' backend through the registry (the default model is prepared on first use)."""
    from backends.registry import load_for

    return load_for(settings)


def marked_answer(message) -> str:
    """An assistant message's Markdown, its unsupported sentences struck through."""
    return present.marked(message.content, message.checks, present.MARKDOWN_MARKS)


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

    def __init__(self, store=None, settings: ChatSettings | None = None, loader: BackendLoader | None = None,
                 conversation_id: int | None = None, export_dir: Path | None = None) -> None:
        """settings: how to answer (the command line's); conversation_id: a stored conversation to
        continue with these settings."""
        super().__init__()
        self._store = store
        self.loader = loader or default_loader
        self.settings = settings or ChatSettings()  # for the next new conversation and model loads
        self.start_conversation = conversation_id
        self.export_dir = export_dir or Path.cwd()
        self.backend = None
        self.session = None
        self._shown_conversation: int | None = None  # before its session opens
        self.model_requested = False
        self.cancel: threading.Event | None = None
        self.generating = False
        self.status_note = "starting"
        self.last_timings = None
        self._followed = None  # the collection kept current in the background, and how to stop that
        self._follow_stop = threading.Event()
        self.sync_note = ""

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

    def on_unmount(self) -> None:
        self._follow_stop.set()  # a background sync stops after its current file (its thread must end)

    def on_mount(self) -> None:
        self.query_one("#input", ChatInput).focus()
        self.update_status("loading model…")
        self.call_after_refresh(self._first_frame)

    def _first_frame(self) -> None:
        """The layout is on screen: now open the history (the sidebar, a conversation to continue)
        and start loading the model; importing the database and torch before would delay the frame."""
        marker = os.environ.get("HEARTH_FIRST_FRAME_FILE")  # set by `hearth bench tui`
        if marker:
            Path(marker).write_text(repr(time.time()))
            self.exit()
            return
        try:
            self.refresh_sidebar()
            if self.start_conversation is not None:
                self.open_conversation(self.start_conversation, restore_settings=False)
        except HearthError as exc:
            self.show_error(str(exc))
        if not self.model_requested:  # /model, /backend or /adapter may have asked for one already
            self.load_backend(self.settings)

    # -- backend and session ----------------------------------------------------------------------
    def load_backend(self, settings: ChatSettings) -> None:
        """Load the model the settings name, in a worker; they become the app's once it is loaded."""
        self.model_requested = True
        self._load(settings)

    @work(thread=True, exclusive=True, group="load")
    def _load(self, settings: ChatSettings) -> None:
        self.call_from_thread(self.update_status, f"loading {settings.backend} model {settings.model or '(default)'}…")
        try:
            backend = self.loader(settings)
        except (HearthError, OSError, ValueError) as exc:
            self.call_from_thread(self.show_error, f"cannot load the model: {exc}")
            return
        if not get_current_worker().is_cancelled:  # a later /model or /backend replaced this load
            self.call_from_thread(self._backend_ready, backend, settings)

    def _backend_ready(self, backend, settings: ChatSettings) -> None:
        self.backend = backend
        model = {name: getattr(settings, name) for name in ("backend", "model", "adapter", "precision")}
        self.settings = self.settings.replace(**model)
        if self.session is None:
            self._open_session(self.conversation_id)
        else:
            self.session.backend = backend
            self.session.configure(**model)
        self.update_status("ready")

    def _open_session(self, conversation_id: int | None) -> None:
        """Bind the loaded backend to a new or stored conversation with the app's settings."""
        from assistant.conversation import open_session

        try:
            self.session = open_session(self.settings, self.store, conversation_id, backend=self.backend)
        except HearthError as exc:  # its collection or files are gone: answer without documents, and say so
            self.show_error(str(exc))
            self.settings = self.settings.replace(collection=None, attachments=())
            self.session = open_session(self.settings, self.store, conversation_id, backend=self.backend)
        self._follow_documents()

    def _configure(self, note: str, **changes) -> None:
        """Change settings for this conversation and the next ones (stored with the conversation)."""
        if self.session is not None:
            self.settings = self.settings.replace(**changes)  # validates before the session changes
            self.session.configure(**changes)
        else:
            if changes.get("collection"):
                from assistant.conversation import open_collection

                open_collection(changes["collection"])  # an unknown name fails now, not at load
            self.settings = self.settings.replace(**changes)
        self._follow_documents()
        self.update_status(note)

    # -- the collection in use, kept current ----------------------------------------------------------
    def _follow_documents(self) -> None:
        """Sync the session's collection with its files now and whenever they change, in a worker;
        searches read a consistent index meanwhile (Collection.reading)."""
        from retrieval.attach import ATTACHED

        collection = self.session.collection if self.session is not None else None
        if collection is not None and (collection.name == ATTACHED or not collection.roots):
            collection = None
        if collection is self._followed:
            return
        self._follow_stop.set()  # the previous one stops after its current file
        self._followed, self._follow_stop, self.sync_note = collection, threading.Event(), ""
        if collection is not None:
            self._keep_current(collection, self._follow_stop)

    @work(thread=True, group="sync")
    def _keep_current(self, collection, stop: threading.Event) -> None:
        from retrieval.collection import Collection
        from retrieval.watch import Watcher

        def tell(*args) -> None:
            try:
                self.call_from_thread(self._sync_progress, stop, *args)
            except RuntimeError:  # the app closed while this sync finished its file
                stop.set()

        def progress(name: str, state: dict) -> None:
            tell(f"syncing {state['files_done']}/{state['files_total']}")

        def synced(name: str, report) -> None:
            tell("", report.changes)

        try:
            # its own connection: the replies' searches read through the session's, in their own transactions
            own = Collection(collection.name, embedder=collection.embedder, create=False, root=collection.dir.parent)
            try:
                Watcher([own], synced, progress=progress).run(stop)
            finally:
                own.close()
        except (HearthError, OSError) as exc:
            tell("sync failed", f"cannot sync: {exc}", "error")

    def _sync_progress(self, stop: threading.Event, note: str, message: str = "", severity: str = "information") -> None:
        """The status bar's sync note, and a notice of what a sync changed (or why it failed)."""
        if stop is not self._follow_stop:  # a sync of a collection no longer in use
            return
        self.sync_note = note
        if message:
            self.notify(f"{self._followed.name}: {message}", severity=severity, timeout=6)
        self.update_status()

    @property
    def conversation_id(self) -> int | None:
        """The conversation on screen (None for a new one not yet sent)."""
        if self.session is not None and self.session.conversation_id is not None:
            return self.session.conversation_id
        return self._shown_conversation

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

    def open_conversation(self, conversation_id: int, restore_settings: bool = True) -> None:
        """Show a stored conversation and make it the current one, with its stored settings
        (restore_settings) or the app's (a conversation named on the command line)."""
        from assistant.conversation import stored_settings

        if self.generating:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        conv = self.store.get_conversation(conversation_id)
        if restore_settings:
            self.settings = stored_settings(self.store, conv.id, self.settings)
        self._shown_conversation = conv.id
        if self.backend is not None:
            self._open_session(conv.id)
        self.render_messages(self.store.messages(conv.id))
        self.update_status(f"opened “{conv.title}”")

    def render_messages(self, messages: Iterable) -> None:
        chat = self.query_one("#chat", VerticalScroll)
        chat.remove_children()
        for m in messages:
            if m.role == "system":
                continue
            box = MessageBox(m.role, marked_answer(m) if m.role == "assistant" else m.content, self._header(m))
            chat.mount(box)
            if m.role == "assistant" and (m.sources or m.checks):
                box.call_after_refresh(box.set_footer, present.footer(m))
        chat.scroll_end(animate=False)

    @staticmethod
    def _header(m) -> str:
        if m.role == "user":
            return "You"
        note = {"stop": "", "complete": "", "length": " · cut at max tokens", "cancelled": " · stopped",
                "interrupted": " · interrupted",
                "error": " · error"}.get(m.status, f" · {m.status}")
        precision = m.settings.get("precision") or "fp32"  # as the reply records it (older ones do not)
        adapter = m.settings.get("adapter")
        model = Path(str(m.model or "?")).name + (f" + {Path(adapter).name}" if adapter else "")
        return f"Hearth · {m.backend or '?'}: {model}{f' ({precision})' if precision != 'fp32' else ''}{note}"

    # -- sending ----------------------------------------------------------------------------------
    @on(ChatInput.Submitted)
    async def _submitted(self, event: ChatInput.Submitted) -> None:
        command = parse(event.text)
        if command is not None:
            await self.run_slash(*command)
            return
        self.send(event.text)

    def _can_start(self) -> bool:
        if self.generating:
            self.notify("A reply is still streaming (Esc stops it).", severity="warning")
            return False
        if self.session is None:
            self.notify("The model is still loading; try again in a moment.", severity="warning")
            return False
        return True

    def send(self, text: str) -> None:
        """Send a user message and stream the reply."""
        if not self._can_start():
            self.query_one("#input", ChatInput).load_text(text)
            return
        self.query_one("#chat", VerticalScroll).mount(MessageBox("user", text, "You"))
        self._stream(lambda cancel: self.session.send(text, cancel))

    def _stream(self, start) -> None:
        from backends.base import label

        chat = self.query_one("#chat", VerticalScroll)
        box = MessageBox("assistant", "", f"Hearth · {label(self.backend)}: …")
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
        await stream.stop(marked_answer(message))
        box.set_header(self._header(message))
        if message.sources or message.checks:
            box.set_footer(present.footer(message))
        self.generating = False
        self.last_timings = done.timings
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
        self._shown_conversation = None
        self.settings = self.settings.replace(system_prompt=ChatSettings().system_prompt)
        if self.backend is not None:
            self._open_session(None)
        self.query_one("#chat", VerticalScroll).remove_children()
        self.update_status("new conversation")

    def action_regenerate(self) -> None:
        if not self._can_start() or not self.session.messages:
            return
        boxes = list(self.query_one("#chat", VerticalScroll).query(MessageBox))
        if boxes and boxes[-1].role == "assistant":
            boxes[-1].remove()
        self._stream(lambda cancel: self.session.regenerate(cancel))

    def action_edit(self) -> None:
        if not self._can_start():
            return
        users = [m for m in self.session.messages if m.role == "user"]
        if not users:
            return

        def resend(text: str | None) -> None:
            if not text:
                return
            self.session.drop_last_exchange()
            self.render_messages(self.session.messages)
            self.send(text)

        self.push_screen(PromptScreen("Edit and resend the last message", users[-1].content), resend)

    def action_rename(self) -> None:
        if self.conversation_id is None:
            self.notify("Send a message first.", severity="warning")
            return
        conv = self.store.get_conversation(self.conversation_id)

        def done(title: str | None) -> None:
            if title:
                self.store.update_conversation(conv.id, title=title)
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
            self.notify(self.settings.system_prompt, title="system prompt")
            return
        self._configure("system prompt set", system_prompt=arg)

    def cmd_preset(self, arg: str) -> None:
        if arg not in PRESETS:
            raise HearthError(f"unknown preset {arg!r}; choose one of {', '.join(PRESETS)}")
        self._configure(f"preset {arg}", sampling=PRESETS[arg])

    def cmd_temp(self, arg: str) -> None:
        try:
            value = float(arg)
        except ValueError:
            raise HearthError("/temp needs a number, e.g. /temp 0.7") from None
        sampling = SamplingParams.from_dict(self.settings.sampling.to_dict() | {"temperature": value})
        self._configure(f"temperature {value}", sampling=sampling)

    def cmd_check(self, arg: str) -> None:
        if arg in POLICIES:
            self._configure(f"check: {arg}", on_unsupported=arg)
        elif arg in ("on", "off"):
            self._configure(f"check: {arg}", check=arg == "on")
        else:
            raise HearthError(f"/check takes {'|'.join(POLICIES)} (grounded answers below the threshold) "
                              "or on|off (check answers without documents)")

    def cmd_backend(self, arg: str) -> None:
        if arg not in BACKENDS:
            raise HearthError(f"/backend takes {' or '.join(BACKENDS)}")
        self.load_backend(self.settings.with_backend(arg))

    def cmd_model(self, arg: str) -> None:
        if not arg:
            raise HearthError("/model needs a folder, a .gguf file, a name from `hearth models list`, or 'default'")
        self.load_backend(self.settings.with_model(arg))

    def cmd_adapter(self, arg: str) -> None:
        adapter = None if arg in ("", "off") else str(Path(arg).expanduser())
        self.load_backend(self.settings.replace(adapter=adapter))

    def cmd_docs(self, arg: str) -> None:
        name = None if arg in ("", "off") else arg
        self._configure(f"documents: {name or 'off'}", collection=name)

    def cmd_attach(self, arg: str) -> None:
        from retrieval.collection import resolved

        names = shlex.split(arg)
        if not names:
            raise HearthError("/attach needs a file (several separated by spaces; quote a name with spaces)")
        files = tuple(str(resolved(Path(name).expanduser())) for name in names)
        self._attach(self.settings.replace(collection=None,
                                           attachments=tuple(dict.fromkeys(self.settings.attachments + files))))

    def cmd_detach(self, arg: str) -> None:
        self._configure("files: none", attachments=())

    @work(thread=True, exclusive=True, group="attach")
    def _attach(self, settings: ChatSettings) -> None:
        """Read and embed attached files away from the UI; they ground the next answers once read."""
        from assistant.conversation import open_sources

        self.call_from_thread(self.update_status, f"reading {len(settings.attachments)} attached file(s)…")
        try:
            sources = open_sources(settings, report=lambda line: self.call_from_thread(self.notify, line))
        except (HearthError, OSError) as exc:
            self.call_from_thread(self.show_error, str(exc))
            return
        self.call_from_thread(self._attached, settings, sources)

    def _attached(self, settings: ChatSettings, sources) -> None:
        if self.session is not None:
            self.session.configure(opened=sources, collection=None, attachments=settings.attachments)
        self.settings = self.settings.replace(collection=None, attachments=settings.attachments)
        self._follow_documents()
        self.update_status("files: " + ", ".join(Path(f).name for f in settings.attachments))

    def cmd_sources(self, arg: str) -> None:
        reply = self.session.last_reply() if self.session else None
        if reply is None or not reply.sources:
            self.notify("The last answer has no sources.")
            return
        self.push_screen(SourcesScreen(reply.sources))

    def cmd_verdict(self, arg: str) -> None:
        number, _, said = arg.partition(" ")
        if not number.isdigit() or said.strip() not in ("right", "wrong"):
            raise HearthError("/verdict takes a sentence number and right or wrong, e.g. /verdict 2 wrong "
                              "(the numbers are under the reply)")
        if self.session is None:
            return
        sentence = self.session.mark_verdict(int(number), said.strip() == "right")
        self.render_messages(self.session.messages)
        self.update_status(f"sentence {number} labelled {sentence['label']} (the check said {sentence['verdict']})")

    def cmd_clear(self, arg: str) -> None:
        if self.session is None:
            return
        self.session.clear()
        self.render_messages([])
        self.update_status("cleared")

    def cmd_delmsg(self, arg: str) -> None:
        if self.session is not None and self.session.delete_last_message() is not None:
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
        reply = self.session.last_reply() if self.session else None
        if reply is None:
            return
        self.copy_to_clipboard(self.session.last_code_block() if arg == "code" else reply.content)
        self.update_status("copied")

    def cmd_export(self, arg: str) -> None:
        from assistant.export import export_all
        from assistant.files import write_user_file

        fmt, _, target = arg.partition(" ")
        fmt = fmt or "md"
        if fmt not in (*FORMATS, ALL):
            raise HearthError(f"/export takes {', '.join(FORMATS)} or {ALL}")
        if fmt == ALL:
            text, name = export_all(self.store), "hearth-conversations"
        else:
            text = self.session.export(fmt) if self.session else ""
            if not text:
                raise HearthError("nothing to export yet")
            name = f"hearth-{self.conversation_id}"
        path = Path(target).expanduser() if target else self.export_dir / f"{name}.{SUFFIXES[fmt]}"
        write_user_file(path, text + "\n")
        self.update_status(f"exported {path}")
        self.notify(f"Exported to {path}")

    # -- status -----------------------------------------------------------------------------------
    def show_error(self, text: str) -> None:
        self.notify(text, severity="error", timeout=8)
        self.update_status(f"error: {text}")

    def update_status(self, note: str | None = None) -> None:
        if note is not None:
            self.status_note = note
        if self.backend is not None:
            from backends.base import label

            parts = [label(self.backend)]
        else:
            parts = [f"{self.settings.backend}: …"]
        files = self.settings.attachments
        parts.append(f"files: {', '.join(Path(f).name for f in files)}" if files
                     else f"docs: {self.settings.collection or 'off'}" + (f" · {self.sync_note}" if self.sync_note else ""))
        plan = self.session.last_plan if self.session is not None else None
        if self.backend is not None:
            parts.append(f"ctx {len(plan.ids) if plan else 0}/{self.backend.context_length}")
        t = self.last_timings
        if t is not None and t.ttft_s is not None:
            parts.append(f"ttft {t.ttft_s:.2f}s" + (f" · {t.decode_tok_s:.1f} tok/s" if t.decode_tok_s else ""))
        parts.append(self.status_note)
        self.query_one("#status", Static).update(" | ".join(parts))
