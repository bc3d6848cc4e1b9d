"""Streaming a long reply: finished blocks are frozen while it streams, and it ends as one Markdown."""

from textual.app import App
from textual.containers import VerticalScroll
from textual.widgets._markdown import MarkdownBlock

from tui.widgets import MessageBox, ReplyStream


class Host(App):
    def compose(self):
        yield VerticalScroll(id="chat")


async def test_long_reply_keeps_few_live_blocks_and_ends_whole():
    paragraphs = [f"Paragraph {i} says something about item {i}." for i in range(60)]
    reply = "\n\n".join(paragraphs[:30]) + "\n\n```python\nx = 1\n```\n\n" + "\n\n".join(paragraphs[30:])
    app = Host()
    async with app.run_test(size=(100, 30)) as pilot:
        box = MessageBox("assistant", "", "Hearth")
        await app.query_one("#chat").mount(box)
        stream = ReplyStream(box)
        most_live = 0
        for word in reply.split(" "):
            await stream.write(word + " ")
            await pilot.pause()
            most_live = max(most_live, sum(isinstance(c, MarkdownBlock) for c in box.body.children))
        frozen_while_streaming = len(stream.frozen)
        assert frozen_while_streaming >= 5
        assert most_live <= ReplyStream.LIVE_BLOCKS + 1
        await stream.stop()
        await pilot.pause()
        assert stream.frozen == [] and not box.query(".frozen")
        assert box.body.source.strip() == (reply + " ").strip()
        assert sum(isinstance(c, MarkdownBlock) for c in box.body.children) == 61  # 60 paragraphs + the code


async def test_stop_with_the_checked_answer_replaces_the_streamed_text():
    app = Host()
    async with app.run_test(size=(100, 30)) as pilot:
        box = MessageBox("assistant", "", "Hearth")
        await app.query_one("#chat").mount(box)
        stream = ReplyStream(box)
        await stream.write("The sky is green.")
        await pilot.pause()
        await stream.stop("⚠ ~~The sky is green.~~ [1]")
        await pilot.pause()
        assert box.body.source == "⚠ ~~The sky is green.~~ [1]"
