"""Bursts of Ctrl-C while `chatllm chat` streams, in a real pty on the real SmolLM2 model: whatever the timing,
the screen shows exactly the partial reply that was saved, and the chat goes on (issue 20)."""

from __future__ import annotations

import io
import json
import re
import sys
import time
import unicodedata

import pexpect
import pytest

from tests.conftest import run_chatllm

pytestmark = pytest.mark.model
PROMPT = "Send a message"  # the input placeholder: shown whenever the REPL waits for input
WIDTH, ROWS = 200, 30  # wide: reply lines rarely wrap in the terminal


class Screen:
    """A small VT100 screen (what a terminal shows, scrollback kept): enough for rich's Live and prompt_toolkit."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.rows: list[list[str]] = [[]]
        self.row = self.col = self.top = 0
        self.saved = (0, 0)

    def feed(self, data: str) -> None:
        """Apply terminal output."""
        i, n = 0, len(data)
        while i < n:
            ch = data[i]
            if ch == "\x1b":
                i = self._escape(data, i)
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self._down(1, scroll=True)
            elif ch == "\b":
                self.col = max(0, self.col - 1)
            elif ch == "\t":
                self.col = min(self.width - 1, (self.col // 8 + 1) * 8)
            elif ch >= " " and ch != "\x7f":
                self._put(ch)
            i += 1

    def _escape(self, data: str, i: int) -> int:
        if i + 1 >= len(data):
            return len(data)
        kind = data[i + 1]
        if kind == "[":
            m = re.compile(r"\[([0-9;?<=>]*)[ -/]*([@-~])").match(data, i + 1)
            if m is None:
                return len(data)
            self._csi(m.group(1), m.group(2))
            return m.end()
        if kind == "]":  # OSC: up to BEL or ST
            end = min((j for j in (data.find("\x07", i), data.find("\x1b\\", i)) if j >= 0), default=len(data))
            return end + (2 if data.startswith("\x1b\\", end) else 1)
        if kind == "7":
            self.saved = (self.row, self.col)
        elif kind == "8":
            self.row, self.col = self.saved
        return i + 2

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # modes: cursor, bracketed paste, autowrap...
        args = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = max(1, args[0]) if args else 1
        if final == "A":
            self.row = max(self.top, self.row - n)
        elif final == "B":
            self._down(n, scroll=False)
        elif final == "C":
            self.col = min(self.width - 1, self.col + n)
        elif final == "D":
            self.col = max(0, self.col - n)
        elif final == "G":
            self.col = min(self.width - 1, n - 1)
        elif final in "Hf":
            self.row = self.top + (max(1, args[0]) - 1 if args else 0)
            self.col = (max(1, args[1]) - 1) if len(args) > 1 else 0
            self._ensure(self.row)
        elif final == "K":
            line, mode = self.rows[self.row], args[0] if args else 0
            if mode == 0:
                del line[self.col:]
            elif mode == 1:
                line[:self.col + 1] = [" "] * min(len(line), self.col + 1)
            else:
                line.clear()
        elif final == "J":
            mode = args[0] if args else 0
            if mode == 0:
                del self.rows[self.row][self.col:]
                for r in range(self.row + 1, len(self.rows)):
                    self.rows[r] = []
            elif mode == 2:
                for r in range(self.top, len(self.rows)):
                    self.rows[r] = []

    def _ensure(self, row: int) -> None:
        while len(self.rows) <= row:
            self.rows.append([])
        self.top = max(self.top, row - self.height + 1)

    def _down(self, n: int, *, scroll: bool) -> None:
        self.row += n
        if not scroll:
            self.row = min(self.row, self.top + self.height - 1)
        self._ensure(self.row)

    def _put(self, ch: str) -> None:
        wide = unicodedata.east_asian_width(ch) in "WF"
        if unicodedata.combining(ch):
            return
        if self.col + (2 if wide else 1) > self.width:
            self.col = 0
            self._down(1, scroll=True)
        line = self.rows[self.row]
        while len(line) < self.col + (2 if wide else 1):
            line.append(" ")
        line[self.col] = ch
        if wide:
            line[self.col + 1] = ""
        self.col += 2 if wide else 1

    def lines(self) -> list[str]:
        """Every row, scrollback included, without trailing blanks."""
        return ["".join(r).rstrip() for r in self.rows]


def rendered(text: str) -> list[str]:
    """The reply as the chat prints it once it is over: chat_markdown at the terminal's width, as plain lines."""
    from rich.console import Console

    from chatllm.repl.views import chat_markdown

    buf = io.StringIO()
    Console(file=buf, width=WIDTH, color_system=None, legacy_windows=False, highlight=False).print(chat_markdown(text))
    lines = [line.rstrip() for line in buf.getvalue().split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def wrapped(text: str) -> list[str]:
    """A plain reply as the terminal shows it: its lines, cut at the terminal's width."""
    lines: list[str] = []
    for line in text.expandtabs(8).split("\n"):
        cut, width = "", 0
        for ch in line:
            w = 2 if unicodedata.east_asian_width(ch) in "WF" else 0 if unicodedata.combining(ch) else 1
            if width + w > WIDTH:
                lines.append(cut)
                cut, width = "", 0
            cut, width = cut + ch, width + w
        lines.append(cut)
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_screen_follows_erases_cursor_moves_and_wraps():
    screen = Screen(10, 4)
    screen.feed(">>> hi\r\n\x1b[?25l\x1b[2mone\x1b[0m\r\n two\r\x1b[2K\x1b[1A\x1b[2Kdone\r\nnext")
    assert screen.lines() == [">>> hi", "done", "next"]
    screen.feed("\r\x1b[2K\x1b[1A\x1b[2K\x1b[1A\x1b[2K>>> x\x1b[1D\x1b[Jyz\r\n0123456789ab\x1b]0;title\x07!")
    assert screen.lines() == [">>> yz", "0123456789", "ab!"]
    assert wrapped("x" * (WIDTH + 5) + "  \n\nok\n\n") == ["x" * WIDTH, "xxxxx", "", "ok"]


def test_plain_view_shows_at_the_end_a_piece_the_reply_got_without_drawing_it():
    from chatllm.output import Output
    from chatllm.repl.views import PlainView

    out = Output(io.StringIO(), io.StringIO(), stdout_tty=False, stderr_tty=False, color=False)
    view = PlainView(out)
    view.start()
    view.update("Hello", "Hello")
    view.finish("Hello, world")  # a Ctrl-C inside the engine came after the reply grew, before it was drawn
    assert out.stdout.getvalue() == "Hello, world\n"


MESSAGES = [
    "List forty animals, one per line.",
    "Write a very long story about a dragon who learns to play the violin.",
    "List forty fruits, one per line, each with its colour.",
    "Write a long markdown guide to brewing tea, with headings and bullet points.",
    "Write a very long story about a robot who learns to paint.",
]


GAPS = [(0.07, 0.07), (0.01, 0.13), (0.13, 0.01), (0.03, 0.03), (0.05, 0.09)]  # seconds between the 3 presses


def spawn(env: dict, color: bool) -> tuple[pexpect.spawn, io.StringIO]:
    env = dict(env, TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS=str(WIDTH), LINES=str(ROWS))
    if color:
        env.pop("NO_COLOR", None)
    log = io.StringIO(newline="")
    child = pexpect.spawn(sys.executable, ["-m", "chatllm", "chat", "-t", "0", "-n", "400"], env=env,
                          encoding="utf-8", timeout=60, dimensions=(ROWS, WIDTH))
    child.logfile_read = log
    child.delaybeforesend = None  # the three presses go within 0.15 s
    child.expect(PROMPT)
    return child, log


def burst_rounds(child: pexpect.spawn, messages: list[str]) -> None:
    """Each message in a new conversation; while its reply streams, three Ctrl-C within 0.15 s."""
    for i, message in enumerate(messages):
        if i:
            child.sendline("/clear")
            child.expect("new conversation")
            child.expect(PROMPT)
        child.sendline(message)
        child.expect_exact(message)
        child.expect_exact("\x1b[?2004l")  # prompt_toolkit turns bracketed paste off: the message was sent
        child.expect(r"[A-Za-z]{2,}[ ,.]+[A-Za-z]{2,}")  # the reply streams
        # Nothing reads the pty meanwhile, like a terminal that lags behind: output queues in the pty (where a
        # Ctrl-C makes the kernel drop it, unless the tty has NOFLSH), and the presses land wherever the reply is:
        # waiting for a token, drawing a frame, printing the whole reply, saving it, or back at the prompt.
        time.sleep(1.5 + 0.25 * i)
        for gap in (*GAPS[i % len(GAPS)], 0.0):
            child.sendintr()
            time.sleep(gap)
        child.expect(r"\d+ tokens, [^\n]*interrupted")
        child.expect(PROMPT)
        time.sleep(0.3)  # presses that reach the prompt clear its (empty) line


def saved_replies(env: dict, n: int) -> list[dict]:
    """The exchange of each of the n conversations, as `chatllm history show --json` gives it."""
    out = []
    for conv_id in range(1, n + 1):
        r = run_chatllm(["history", "show", str(conv_id), "--json"], env)
        assert r.returncode == 0, r.stderr
        (exchange,) = json.loads(r.stdout)["exchanges"]
        out.append(exchange)
    return out


def shown_replies(raw: str, messages: list[str]) -> list[tuple[list[str], str, str]]:
    """For each message: the rows under `>>> message` up to the stats line, the stats line, and the row after it."""
    screen = Screen(WIDTH, ROWS)
    screen.feed(raw)
    rows = screen.lines()
    out = []
    for message in messages:
        at = [i for i, row in enumerate(rows) if row == ">>> " + message]
        assert len(at) == 1, (message, rows)
        end = next(j for j in range(at[0] + 1, len(rows)) if re.match(r"\d+ tokens, ", rows[j]) or
                   rows[j].startswith(">>>"))
        shown = rows[at[0] + 1:end]
        while shown and not shown[-1]:
            shown.pop()
        out.append((shown, rows[end], rows[end + 1] if end + 1 < len(rows) else ""))
    return out


# cli_env sets PYTHONUNBUFFERED=1, as many container images do: unbuffered, a press that cut a write blocked on the
# lagging pty short used to lose the rest of a live-markdown frame (chatllm/stdio.py).
@pytest.mark.parametrize("color", [False, True], ids=["plain", "live-markdown"])
def test_after_bursts_of_ctrl_c_the_screen_shows_exactly_the_saved_partial_reply(cli_env, color):
    messages = MESSAGES if color else MESSAGES[:3]
    child, log = spawn(cli_env, color)
    burst_rounds(child, messages)
    child.sendline("/history")  # the prompt still works after the bursts
    child.expect(PROMPT)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    raw = log.getvalue()
    assert child.exitstatus == 0, raw[-2000:]
    assert "Traceback" not in raw

    saved = saved_replies(cli_env, len(messages))
    following = [">>> /clear"] * (len(messages) - 1) + [">>> /history"]
    for message, exchange, (shown, stats, after), then in zip(messages, saved, shown_replies(raw, messages), following):
        assert exchange["user"] == message
        assert exchange["interrupted"] and exchange["assistant"].strip(), exchange
        want = rendered(exchange["assistant"]) if color else wrapped(exchange["assistant"])
        assert shown == want, (message, exchange["assistant"])
        assert stats.endswith(", interrupted"), (message, stats)  # the marker, right under the reply
        assert after == then, (message, after)  # presses that reached the prompt left no trace
    assert "^C" not in raw  # no press echoed into a reply, a stats line or a prompt
