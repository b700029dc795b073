"""The browser UI (static/, docs/ui.md) in Debian's chromium, driven by
Playwright, against the real service on the tiny fixture model (whose
answers are random text). Every user step is a real click or keystroke;
the WebSocket frames the page sends and receives are recorded to check
what travelled.

Checked: an image question streams its answer across several paints;
Stop and Esc cancel the job on the server (/metrics); a follow-up resends
the conversation's image; a huge image is downscaled before sending; a
non-image file and a wrong API key get clear messages; Markdown with
injected handlers renders inert, and plain text without the vendor
libraries; the queue position shows while the worker is busy; keyboard
use; screenshots at desktop and phone widths in English and Chinese, saved
under GS_BUILD_DIR/ui-screenshots."""
import base64
import hashlib
import json
import os
import re
import signal
import struct
import time

import pytest

from service import Service

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    print(f"test_ui: skipped: {CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    print("test_ui: skipped: the playwright package is missing (tests/requirements.txt)")
    pytest.skip("the playwright package is missing", allow_module_level=True)
from websockets.sync.client import connect

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
T = 30_000  # ms: Playwright's wait for any one thing
expect.set_options(timeout=T)


# ---- services and browser -------------------------------------------------------------------

@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory):
    """One worker taking one sequence at a time, so a second ask queues."""
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("ui"), "--max-seqs", "1")
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture(scope="module")
def keyed(build_dir, fixtures, tmp_path_factory):
    """API keys (one of them allowed one request a minute), no Markdown
    libraries to serve, two images per request."""
    tmp = tmp_path_factory.mktemp("uikeys")
    keys = tmp / "keys"
    keys.write_text("".join(f"sha256:{hashlib.sha256(k.encode()).hexdigest()} {opts}\n" for k, opts in
                            (("key-A", "name=ui"), ("key-slow", "name=slow rate=1/m burst=0"))))
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp, "--api-key-file", keys,
                "--vendor-dirs", tmp / "no-vendor", "--max-images", "2")
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture(scope="module")
def browser():
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
    yield b
    b.close()
    pw.stop()


@pytest.fixture(scope="module")
def shots(build_dir):
    d = build_dir / "ui-screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


class Tab:
    """A page in a fresh context, with its WebSocket frames and errors recorded."""

    def __init__(self, browser, locale="en-US", viewport=DESKTOP, scheme="light"):
        self.ctx = browser.new_context(locale=locale, viewport=viewport, device_scale_factor=1,
                                       color_scheme=scheme)
        self.ctx.set_default_timeout(T)
        self.page = self.ctx.new_page()
        self.sent, self.received, self.errors = [], [], []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("websocket", self._ws)

    def _ws(self, ws):
        ws.on("framesent", lambda p: self.sent.append(p))
        ws.on("framereceived", lambda p: self.received.append(json.loads(p)))

    def open(self, s, query="", connected=True):
        self.page.goto(f"http://{s.host}:{s.port}/{'?' + query if query else ''}")
        expect(self.page.locator("body")).to_have_attribute("data-ready", "1")
        if connected:
            expect(self.page.locator("#conn")).to_have_attribute("data-state", "open")
        return self.page

    def asks(self):
        return [json.loads(f) for f in self.sent if isinstance(f, str) and '"ask"' in f]

    def binary(self):
        return [f for f in self.sent if isinstance(f, bytes)]

    def ends(self, kind="done"):
        return [m for m in self.received if m.get("type") == kind]

    def close(self):
        self.ctx.close()
        assert not self.errors, self.errors


@pytest.fixture
def tab(browser):
    t = Tab(browser)
    yield t
    t.close()


def pick(page, *paths):
    """The user's way in: the paperclip button, then the file chooser."""
    with page.expect_file_chooser() as fc:
        page.get_by_role("button", name=re.compile("Add image|添加图片")).click()
    fc.value.set_files([str(p) for p in paths])


def ask(page, text):
    page.locator("#question").click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def last_answer(page):
    return page.locator(".turn.assistant").last


def wait_finished(page, reason=None, timeout=T):
    a = last_answer(page)
    expect(a).to_have_attribute("data-finish", re.compile(reason or ".+"), timeout=timeout)
    return a


def metric(s, name, labels):
    _, _, body = s.request("GET", "/metrics")
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\d+)", body, re.M)
    return int(m.group(1)) if m else None


def jpeg_size(data):
    """(width, height) from a JPEG's SOF marker."""
    i = 2
    while i < len(data):
        assert data[i] == 0xFF, i
        marker, n = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + n
    raise AssertionError("no SOF marker")


# ---- asking ---------------------------------------------------------------------------------

def test_image_question_streams_across_paints(svc, tab, fixtures):
    page = tab.open(svc, "max_tokens=400&seed=3&temperature=1&ignore_eos=1")
    pick(page, fixtures / "ref" / "images" / "model_56x56.png")
    expect(page.locator("#attachments img")).to_have_count(1)
    # sample the answer's length once per painted frame
    page.evaluate("""() => {
        window.__lens = [];
        const tick = () => {
            const a = document.querySelector('.turn.assistant:last-child .answer');
            window.__lens.push(a ? a.textContent.length : 0);
            if (!(a && a.closest('[data-finish]'))) requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
    }""")
    ask(page, "What is in this picture?")
    answer = wait_finished(page, "length")
    lens = page.evaluate("window.__lens")
    rising = [n for i, n in enumerate(lens) if n > 0 and n > max(lens[:i], default=0)]
    assert len(rising) >= 3, f"the answer came in {len(rising)} paint(s): {lens}"
    # what travelled: one ask announcing one image, then its bytes
    (a,) = tab.asks()
    assert a["images"] == 1 and a["max_tokens"] == 400, a
    assert a["messages"][-1]["content"][0] == {"type": "image_ref", "index": 0}, a
    assert tab.binary()[0] == (fixtures / "ref" / "images" / "model_56x56.png").read_bytes()
    (done,) = tab.ends()
    assert done["usage"]["completion_tokens"] == 400
    stats = answer.locator(".stats")
    expect(stats).to_contain_text("first token")
    expect(stats).to_contain_text("400 tokens")
    expect(stats).to_contain_text("tokens/s")
    expect(page.locator(".turn.user img")).to_have_count(1)
    expect(page.locator("#attachments img")).to_have_count(0)


def test_follow_up_keeps_the_image(svc, tab, fixtures):
    img = fixtures / "ref" / "images" / "square_336x336.jpg"
    page = tab.open(svc, "max_tokens=6&seed=1")
    pick(page, img)
    expect(page.locator("#attachments img")).to_have_count(1)
    ask(page, "Describe the image.")
    wait_finished(page)
    ask(page, "And what colour is it?")
    expect(page.locator(".turn.assistant")).to_have_count(2)
    wait_finished(page)
    first, second = tab.asks()
    assert first["images"] == second["images"] == 1
    m = second["messages"]
    assert [x["role"] for x in m] == ["user", "assistant", "user"], m
    assert m[0]["content"] == [{"type": "image_ref", "index": 0},
                               {"type": "text", "text": "Describe the image."}]
    assert m[2]["content"] == [{"type": "text", "text": "And what colour is it?"}]
    frames = tab.binary()
    assert len(frames) == 2 and frames[0] == frames[1] == img.read_bytes()
    d1, d2 = tab.ends()
    # the whole first exchange, image tokens included, is in the second prompt
    assert d2["usage"]["prompt_tokens"] >= (d1["usage"]["prompt_tokens"]
                                            + d1["usage"]["completion_tokens"]), (d1, d2)
    assert d1["usage"]["prompt_tokens"] > 100, d1  # 336x336: 144 image tokens


def test_huge_image_is_downscaled_in_the_browser(svc, tab, fixtures):
    """A PNG 2000 px wide travels as a JPEG 1536 px wide (a thin one: the
    tiny model's CPU prefill of a big photo would take seconds)."""
    page = tab.open(svc, "max_tokens=2")
    pick(page, fixtures / "ref" / "images" / "wide_2000x60.png")
    expect(page.locator("#attachments img")).to_have_count(1)
    ask(page, "What is this?")
    wait_finished(page)
    (frame,) = tab.binary()
    w, h = jpeg_size(frame)
    assert w == 1536 and h == round(60 * 1536 / 2000), (w, h)


def test_stop_cancels_the_job_on_the_server(svc, tab):
    before = metric(svc, "glmserve:requests_finished_total", 'finish_reason="cancelled"') or 0
    page = tab.open(svc, "max_tokens=8000&ignore_eos=1")
    ask(page, "Tell me a long story.")
    expect(last_answer(page).locator(".answer")).not_to_be_empty()
    page.get_by_role("button", name="Stop").click()
    answer = wait_finished(page, "cancelled")
    expect(answer.locator(".stats")).to_contain_text("Stopped")
    expect(page.locator("#send")).to_be_visible()
    end = time.time() + 10
    while time.time() < end:
        after = metric(svc, "glmserve:requests_finished_total", 'finish_reason="cancelled"')
        if after is not None and after > before:
            break
        time.sleep(0.1)
    assert after is not None, "no glmserve:requests_finished_total in /metrics"
    assert after == before + 1
    assert tab.ends()[0]["finish_reason"] == "cancelled"


def test_keyboard_alone(svc, tab):
    page = tab.open(svc, "max_tokens=8000&ignore_eos=1")
    q = page.locator("#question")
    expect(q).to_be_focused()  # the page opens ready to type
    # before the box, in reverse reading order: the empty page's button, the
    # header's buttons, and first of all a link that skips to the box
    for control in ("#empty-pick", "#new-chat", "#lang", ".skip"):
        page.keyboard.press("Shift+Tab")
        expect(page.locator(control)).to_be_focused()
    page.keyboard.press("Enter")
    expect(q).to_be_focused()
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert q.input_value() == "first line\nsecond line"
    assert not tab.asks()
    # then the box's controls, in reading order, each with a visible focus ring
    for control in ("#attach", "#thinking", "#send"):
        page.keyboard.press("Tab")
        expect(page.locator(control)).to_be_focused()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    ring = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert ring == "solid", ring
    page.keyboard.press("Shift+Tab")
    expect(q).to_be_focused()
    page.keyboard.press("Enter")
    expect(last_answer(page).locator(".answer")).not_to_be_empty()
    page.keyboard.press("Escape")
    wait_finished(page, "cancelled")
    assert tab.asks()[0]["messages"][-1]["content"] == [
        {"type": "text", "text": "first line\nsecond line"}]
    expect(q).to_be_focused()


def test_thinking_switch_sends_enable_thinking_false(svc, tab):
    page = tab.open(svc, "max_tokens=2")
    ask(page, "Hi")
    wait_finished(page)
    page.locator("label.switch").click()  # off
    expect(page.get_by_role("switch")).not_to_be_checked()
    ask(page, "Hi again")
    expect(page.locator(".turn.assistant")).to_have_count(2)
    wait_finished(page)
    first, second = tab.asks()
    assert "chat_template_kwargs" not in first
    assert second["chat_template_kwargs"] == {"enable_thinking": False}


def test_new_chat_clears_the_conversation(svc, tab):
    page = tab.open(svc, "max_tokens=2")
    ask(page, "Hi")
    wait_finished(page)
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".turn")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    ask(page, "Hi again")
    wait_finished(page)
    assert len(tab.asks()[1]["messages"]) == 1


def test_queue_position_shows_while_the_worker_is_busy(svc, tab):
    """--max-seqs 1: a long answer holds the worker, so the page's ask waits."""
    with connect(f"ws://{svc.host}:{svc.port}/v1/ws", open_timeout=10, close_timeout=5) as hog:
        hog.send(json.dumps({"type": "ask", "id": "hog", "max_tokens": 8000, "ignore_eos": True,
                             "messages": [{"role": "user", "content": "Go on and on."}]}))
        assert json.loads(hog.recv(timeout=30))["type"] == "delta"
        page = tab.open(svc, "max_tokens=4")
        ask(page, "Am I in a line?")
        status = last_answer(page).locator(".status")
        expect(status).to_contain_text(re.compile(r"Waiting in line: [1-9]\d* ahead"))
        hog.send(json.dumps({"type": "cancel", "id": "hog"}))
        while json.loads(hog.recv(timeout=30))["type"] != "done":
            pass  # read what is left, so that the close handshake is not stuck behind it
        wait_finished(page)
    queued = tab.ends("queued")
    assert queued and queued[0]["position"] >= 1, queued
    assert queued[-1]["position"] == 0, queued
    expect(last_answer(page).locator(".status")).to_be_hidden()


def test_a_lost_connection_is_said_and_comes_back(svc, tab):
    """The gateway process dies mid-answer; the master starts another."""
    page = tab.open(svc, "max_tokens=8000&ignore_eos=1")
    ask(page, "A long answer, please.")
    answer = last_answer(page)
    expect(answer.locator(".answer")).not_to_be_empty()
    (gateway,) = svc.pids("gateway").values()
    os.kill(gateway, signal.SIGKILL)
    expect(answer.locator(".error")).to_have_text(
        "The connection was lost before the answer was finished.")
    expect(page.locator("#alert")).to_contain_text("The connection to the server was lost")
    expect(page.locator("#question")).to_have_value("A long answer, please.")  # to send again
    expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=20_000)
    expect(page.locator("#alert")).to_be_hidden()
    page.locator("#question").press("Enter")
    expect(page.locator(".turn.assistant")).to_have_count(2)
    expect(last_answer(page).locator(".answer")).not_to_be_empty()
    page.keyboard.press("Escape")
    wait_finished(page, "cancelled")
    assert svc.pids("gateway")[0] != gateway


# ---- refusals -------------------------------------------------------------------------------

def test_non_image_files_get_a_clear_message(svc, tab, tmp_path):
    page = tab.open(svc)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    pick(page, notes)
    alert = page.locator("#alert")
    expect(alert).to_contain_text("“notes.txt” is not an image")
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"this is text, named like a PNG")
    pick(page, fake)
    expect(alert).to_contain_text("“photo.png” could not be read as an image")
    expect(page.locator("#attachments img")).to_have_count(0)
    assert not tab.asks()


def test_an_image_the_server_refuses_is_said_plainly(svc, tab, fixtures):
    """The server's decoder refuses an image (400) that the browser could
    draw: here the picked image's frame is cut short on its way, the page
    says why in plain words and gives the question back."""
    def relay(ws):
        server = ws.connect_to_server()
        ws.on_message(lambda m: server.send(m[:len(m) // 2] if isinstance(m, bytes) else m))
    tab.page.route_web_socket(re.compile(r"/v1/ws$"), relay)
    page = tab.open(svc, "max_tokens=2")
    pick(page, fixtures / "ref" / "images" / "small_100x140.jpg")
    expect(page.locator("#attachments img")).to_have_count(1)
    ask(page, "What is this?")
    expect(last_answer(page).locator(".error")).to_have_text(
        re.compile(r"^The server could not use an image: image 0: truncated JPEG"))
    expect(page.locator("#question")).to_have_value("What is this?")
    expect(page.locator("#attachments img")).to_have_count(1)


def test_markdown_renders_inert(svc, tab):
    page = tab.open(svc)
    out = page.evaluate("""async () => {
        const r = await import('/js/render.js');
        const div = document.createElement('div');
        document.body.append(div);
        r.renderInto(div, [
            '# Title', '', '**bold** and a [link](https://example.org/)', '',
            '<img src=x onerror="window.__pwned = 1">',
            '[click](javascript:window.__pwned=2)',
            '<a href="javascript:window.__pwned=3">a</a>',
            '<script>window.__pwned = 4</script>',
            '<svg onload="window.__pwned = 5"></svg>',
            '<iframe src="javascript:window.__pwned=6"></iframe>',
            '<div style="background:url(javascript:alert(1))" onmouseover="window.__pwned=7">x</div>',
        ].join('\\n'));
        await new Promise(res => setTimeout(res, 300));
        const attrs = [...div.querySelectorAll('*')].flatMap(
            e => [...e.attributes].map(a => a.name + '=' + a.value));
        return {markdown: r.hasMarkdown(), pwned: window.__pwned ?? null, attrs,
                html: div.innerHTML, strong: div.querySelectorAll('strong').length,
                h1: div.querySelectorAll('h1').length,
                bad: div.querySelectorAll('script,iframe,svg,[onerror],[onload]').length};
    }""")
    assert out["markdown"], "marked and DOMPurify did not load from /vendor/"
    assert out["pwned"] is None, out
    assert out["bad"] == 0, out["html"]
    assert not [a for a in out["attrs"] if a.startswith("on") or "javascript:" in a], out["attrs"]
    assert out["strong"] == 1 and out["h1"] == 1, out["html"]


def test_thinking_is_shown_apart_and_collapsed(svc, tab):
    """The tiny model never thinks, so the answer view gets the deltas a
    thinking model sends (reasoning first, then content) in the page."""
    page = tab.open(svc)
    page.evaluate("""async () => {
        const {AnswerView} = await import('/js/chat.js');
        const v = new AnswerView(document.getElementById('turns'));
        window.__view = v;
        v.delta({reasoning: 'The user asks about '});
        v.delta({reasoning: 'a red square.'});
        await new Promise(r => setTimeout(r, 50));
        v.delta({content: 'A **red** square.'});
        v.done({finish_reason: 'stop', usage: {completion_tokens: 3},
                timings: {decode_ms: 20, ttft_ms: 5, queue_ms: 0}});
    }""")
    answer = last_answer(page)
    think = answer.locator("details.thinking")
    expect(think).to_be_visible()
    expect(think).not_to_have_attribute("open", "")
    expect(think.locator("summary")).to_have_text(re.compile(r"Thought for \d+\.\d s"))
    expect(think.locator(".think-text")).to_be_hidden()
    expect(answer.locator(".answer")).to_have_text("A red square.")
    think.locator("summary").click()
    expect(think.locator(".think-text")).to_have_text("The user asks about a red square.")


def test_wrong_key_then_right_key_and_plain_text_fallback(keyed, tab):
    page = tab.open(keyed, "max_tokens=24&seed=5&temperature=1", connected=False)
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()  # /v1/info says the server wants a key
    page.locator("#key-input").fill("wrong-key")
    page.locator("#key-input").press("Enter")
    expect(page.locator("#key-error")).to_have_text(
        "The server did not accept this API key. Check it and try again.")
    expect(dialog).to_be_visible()
    page.locator("#key-input").fill("key-A")
    page.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    ask(page, "Hello")
    answer = wait_finished(page)
    # no /vendor/ libraries here: the answer is plain text
    expect(answer.locator(".answer")).to_have_class(re.compile(r"\bplain\b"))
    assert page.evaluate("localStorage.getItem('glmserve.apiKey')") == "key-A"
    out = page.evaluate("""async () => {
        const r = await import('/js/render.js');
        const div = document.createElement('div');
        const text = '**x** <img src=x onerror="window.__pwned=1">';
        r.renderInto(div, text);
        document.body.append(div);
        await new Promise(res => setTimeout(res, 200));
        return {markdown: r.hasMarkdown(), same: div.textContent === text,
                kids: div.children.length, pwned: window.__pwned ?? null};
    }""")
    assert out == {"markdown": False, "same": True, "kids": 0, "pwned": None}, out


def test_a_refused_key_mid_session_asks_again(keyed, tab):
    page = tab.open(keyed, connected=False)
    page.evaluate("localStorage.setItem('glmserve.apiKey', 'stale-key')")
    page.reload()
    expect(page.locator("#key-dialog")).to_be_visible()
    expect(page.locator("#key-error")).to_contain_text("did not accept")


def test_too_many_images_and_too_many_requests(keyed, tab, fixtures):
    page = tab.open(keyed, "max_tokens=2", connected=False)
    page.evaluate("localStorage.setItem('glmserve.apiKey', 'key-slow')")
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(page.locator("#key-dialog")).to_be_hidden()
    imgs = fixtures / "ref" / "images"
    pick(page, imgs / "model_56x56.png", imgs / "model_84x56.png", imgs / "tiny_20x90.png")
    expect(page.locator("#attachments img")).to_have_count(2)  # /v1/info: max_images 2
    expect(page.locator("#alert")).to_contain_text("A conversation can hold at most 2 images")
    ask(page, "Two pictures")
    wait_finished(page)
    assert tab.asks()[0]["images"] == 2 and len(tab.binary()) == 2
    ask(page, "And again")
    expect(last_answer(page).locator(".error")).to_have_text(
        re.compile(r"Too many requests\. Please wait \d+ s and try again\."))
    expect(page.locator("#question")).to_have_value("And again")  # to send again later
    assert tab.ends("error")[0]["status"] == 429


def test_drop_and_paste_add_images(svc, tab, fixtures):
    page = tab.open(svc)
    png = base64.b64encode((fixtures / "ref" / "images" / "model_56x56.png").read_bytes()).decode()
    page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        window.__files = () => {
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
            return dt;
        };
        const dt = window.__files();
        window.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, cancelable: true}));
    }""", png)
    expect(page.locator("#drop")).to_be_visible()
    page.evaluate("""() => window.dispatchEvent(new DragEvent('drop',
        {dataTransfer: window.__files(), cancelable: true}))""")
    expect(page.locator("#drop")).to_be_hidden()
    expect(page.locator("#attachments img")).to_have_count(1)
    page.locator("#question").focus()
    page.evaluate("""() => document.activeElement.dispatchEvent(new ClipboardEvent('paste',
        {clipboardData: window.__files(), bubbles: true, cancelable: true}))""")
    expect(page.locator("#attachments img")).to_have_count(2)
    page.get_by_role("button", name="Remove image 1").click()
    expect(page.locator("#attachments img")).to_have_count(1)


# ---- looks ----------------------------------------------------------------------------------

def screenshot_conversation(browser, s, shots, fixtures, lang, scheme="light"):
    locale = {"en": "en-US", "zh": "zh-CN"}[lang]
    t = Tab(browser, locale=locale, viewport=DESKTOP, scheme=scheme)
    try:
        page = t.open(s, "max_tokens=60&seed=11&temperature=0.9")
        pick(page, fixtures / "ref" / "images" / "medium_640x480.jpg")
        expect(page.locator("#attachments img")).to_have_count(1)
        q = {"en": "What is in this photo? Please describe it briefly.",
             "zh": "这张照片里有什么？请简单描述一下。"}[lang]
        page.locator("#question").fill(q)
        page.locator("#question").press("Enter")
        wait_finished(page)
        page.locator("#question").fill({"en": "And the colours?", "zh": "颜色呢？"}[lang])
        page.mouse.move(0, 0)
        suffix = "" if scheme == "light" else "-dark"
        page.screenshot(path=str(shots / f"{lang}-desktop{suffix}.png"))
        if scheme != "light":
            return page
        page.set_viewport_size(PHONE)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width} px wide at phone width"
        page.screenshot(path=str(shots / f"{lang}-phone.png"))
        return page
    finally:
        t.close()


def test_screenshots_in_both_languages(svc, browser, shots, fixtures):
    for lang in ("en", "zh"):
        screenshot_conversation(browser, svc, shots, fixtures, lang)
    screenshot_conversation(browser, svc, shots, fixtures, "en", scheme="dark")
    for name in ("en-desktop", "en-phone", "zh-desktop", "zh-phone", "en-desktop-dark"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name


def test_language_follows_the_browser_and_switches(svc, browser, shots):
    t = Tab(browser, locale="zh-CN", viewport=PHONE)
    try:
        page = t.open(svc)
        q = page.locator("#question")
        expect(q).to_have_attribute("placeholder", "关于这张图片，想问什么？")
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        page.screenshot(path=str(shots / "zh-phone-empty.png"))
        page.get_by_role("button", name="语言 / Language").click()
        expect(q).to_have_attribute("placeholder", "Ask about the image…")
        expect(page.locator("#empty h2")).to_have_text("Ask about an image")
        page.reload()
        expect(page.locator("body")).to_have_attribute("data-ready", "1")
        expect(q).to_have_attribute("placeholder", "Ask about the image…")  # the choice is kept
        page.screenshot(path=str(shots / "en-phone-empty.png"))
    finally:
        t.close()


def test_switching_language_relabels_what_is_shown(svc, tab, tmp_path):
    """Text shown before a switch (an answer's numbers and finish note, the
    hidden speaker labels, an error in the alert bar) follows the switch;
    the words of the question and the answer do not change."""
    page = tab.open(svc, "max_tokens=5&ignore_eos=1&lang=en")
    ask(page, "Hello there")
    a = wait_finished(page, "length")
    stats = a.locator(".stats")
    expect(stats).to_contain_text("Stopped at the length limit")
    expect(stats).to_contain_text("5 tokens")
    expect(page.locator(".turn.user .who")).to_have_text("You")
    answer = a.locator(".answer").inner_text()
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    pick(page, notes)
    expect(page.locator("#alert")).to_contain_text("“notes.txt” is not an image")
    page.locator("#lang").click()
    expect(stats).to_contain_text("已达长度上限")
    expect(stats).to_contain_text("5 个词元")
    expect(stats).not_to_contain_text("tokens")
    expect(page.locator(".turn.user .who")).to_have_text("你")
    expect(a.locator(".who")).to_have_text("回答")
    expect(page.locator("#alert")).to_contain_text("“notes.txt” 不是图片")
    assert a.locator(".answer").inner_text() == answer
    expect(page.locator(".turn.user .text")).to_have_text("Hello there")
    page.locator("#lang").click()  # and back
    expect(stats).to_contain_text("Stopped at the length limit")
    expect(page.locator("#alert")).to_contain_text("“notes.txt” is not an image")
