"""The official openai Python SDK against the whole service on the tiny
model: chat completions (plain and streamed, with an image, usage,
max_completion_tokens, stop strings, seeds), models.list, and the SDK's own
error classes for what the server refuses (400, 404, 401, 429 with
Retry-After honoured). The tiny model's answers are random text: the tests
assert shapes, types, counts and determinism, never words."""
import hashlib
import threading
import time

import openai
import pytest

from service import Service, data_url

MODEL = "tiny-glm4v"
HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def client_for(svc, key="none", **kw):
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 60)
    return openai.OpenAI(base_url=f"http://{svc.host}:{svc.port}/v1", api_key=key, **kw)


@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("sdk"))
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture(scope="module")
def client(svc):
    return client_for(svc)


@pytest.fixture(scope="module")
def image_msgs(fixtures):
    d = fixtures / "ref" / "images"
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(d / "gray_123x77.png")}},
        {"type": "image_url", "image_url": {"url": data_url(d / "exif3_90x60.jpg")}},
        {"type": "text", "text": "Compare the two images."}]}]


def check_completion(r, max_tokens):
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL
    assert isinstance(r.created, int) and r.created > 1_600_000_000
    assert len(r.choices) == 1
    ch = r.choices[0]
    assert ch.index == 0 and ch.message.role == "assistant"
    assert isinstance(ch.message.content, str)
    assert ch.finish_reason in ("stop", "length")
    u = r.usage
    assert 1 <= u.completion_tokens <= max_tokens
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    if ch.finish_reason == "length":
        assert u.completion_tokens == max_tokens
    rc = getattr(ch.message, "reasoning_content", None)
    assert rc is None or isinstance(rc, str)


def test_models_list(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [MODEL]
    assert models.data[0].object == "model"


def test_chat_with_images(client, image_msgs):
    r = client.chat.completions.create(model=MODEL, messages=image_msgs, max_tokens=6,
                                       temperature=0)
    check_completion(r, 6)
    text_only = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Compare the two images."}],
        max_tokens=1, temperature=0)
    # the two images' tokens are in the prompt
    assert r.usage.prompt_tokens > text_only.usage.prompt_tokens + 10


def test_stream_with_image_and_usage(client, image_msgs):
    plain = client.chat.completions.create(model=MODEL, messages=image_msgs, max_tokens=8,
                                           temperature=0)
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=image_msgs, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert len(chunks) >= 3
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    # the usage chunk comes last, with no choices; the one before it ends the choice
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert all(c.usage is None for c in chunks[:-1])
    content = reasoning = ""
    for c in chunks[:-1]:
        d = c.choices[0].delta
        assert d.content is None or isinstance(d.content, str)
        rc = getattr(d, "reasoning_content", None)
        assert rc is None or isinstance(rc, str)
        content += d.content or ""
        reasoning += rc or ""
    # greedy: the stream says what the plain answer says, and counts the same
    assert content == plain.choices[0].message.content
    assert reasoning.rstrip("\n") == (getattr(plain.choices[0].message, "reasoning_content",
                                              None) or "")
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_stream_without_usage(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3,
                                                 stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_max_completion_tokens(client):
    for n in (1, 5):
        r = client.chat.completions.create(model=MODEL, messages=HELLO,
                                           max_completion_tokens=n, temperature=0)
        check_completion(r, n)


def test_stop_strings(client):
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16,
                                          temperature=0)
    text = full.choices[0].message.content
    assert len(text) >= 8, text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    want = text[:text.index(stop)]
    for s in (stop, [stop, "\u2603never\u2603"]):
        r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16,
                                           temperature=0, stop=s)
        assert r.choices[0].finish_reason == "stop"
        assert r.choices[0].message.content == want
        assert r.usage.completion_tokens < full.usage.completion_tokens


def test_seed_reproducible_at_temperature_1(client):
    def answer(seed):
        r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12,
                                           temperature=1, top_p=1, seed=seed)
        return r.choices[0].message.content
    a = answer(1234)
    assert answer(1234) == a
    others = {answer(s) for s in (1, 2, 3)}
    assert others - {a}, "three other seeds all gave the same text as seed 1234"
    # stream and plain sample the same tokens for a seed
    chunks = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12,
                                            temperature=1, top_p=1, seed=1234, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == a


def test_reasoning_content_field_types(client):
    """Thinking on: whatever the random model writes, reasoning_content is
    absent or a string, and content is a string."""
    r = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    check_completion(r, 8)
    extra = r.choices[0].message.model_extra or {}
    assert set(extra) <= {"reasoning_content"}, extra
    r = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    check_completion(r, 8)


def test_n_2_refused(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, messages=HELLO, n=2, max_tokens=1)
    e = ei.value
    assert e.status_code == 400
    assert "n=1" in e.message
    assert e.body["param"] == "n" and e.body["type"] == "invalid_request_error"


def test_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="gpt-17", messages=HELLO, max_tokens=1)
    assert ei.value.status_code == 404
    assert "gpt-17" in ei.value.message and ei.value.body["param"] == "model"


def test_bad_parameter_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, messages=HELLO, temperature=-3,
                                       max_tokens=1)
    assert "temperature" in ei.value.message


# ---- keys: 401 and 429 ---------------------------------------------------------------------

KEY = "sk-glmserve-test-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(build_dir, fixtures, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sdk-keys")
    keys = tmp / "keys"
    keys.write_text("sha256:" + hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp, "--api-key-file", keys,
                "--rate", "1", "--burst", "1")
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def test_401(keyed):
    for key in ("wrong-key", KEY + "x"):
        with pytest.raises(openai.AuthenticationError) as ei:
            client_for(keyed, key).chat.completions.create(model=MODEL, messages=HELLO,
                                                            max_tokens=1)
        assert ei.value.status_code == 401
        assert ei.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        client_for(keyed, "wrong-key").models.list()
    assert [m.id for m in client_for(keyed, KEY).models.list().data] == [MODEL]


def test_429_exact_counts_and_retry_after(keyed):
    """rate 1/s, burst 1: at one instant 1 + 1 requests pass, the rest get
    429 with Retry-After; the SDK waits that long and then gets through."""
    time.sleep(2.5)  # whatever ran before, the bucket is empty again
    c = client_for(keyed, KEY)
    results, barrier = [None] * 5, threading.Barrier(5)

    def one(i):
        barrier.wait()
        try:
            results[i] = c.chat.completions.with_raw_response.create(
                model=MODEL, messages=HELLO, max_tokens=1)
        except openai.RateLimitError as e:
            results[i] = e

    ts = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    errs = [r for r in results if isinstance(r, openai.RateLimitError)]
    oks = [r for r in results if r is not None and not isinstance(r, Exception)]
    assert len(oks) == 2 and len(errs) == 3, results
    for e in errs:
        assert e.status_code == 429
        assert e.body["type"] == "rate_limit_error"
        ra = int(e.response.headers["retry-after"])
        assert 1 <= ra <= 2, ra
    # refused again at once; then the SDK's own retry waits Retry-After and gets through
    seen = []
    http = openai.DefaultHttpxClient(event_hooks={"response": [
        lambda resp: seen.append((time.time(), resp.status_code,
                                  resp.headers.get("retry-after")))]})
    retrying = client_for(keyed, KEY, max_retries=3, http_client=http)
    for _ in range(5):  # make sure the bucket is full right now
        try:
            c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
        except openai.RateLimitError:
            break
    else:
        pytest.fail("5 requests in a row passed a limit of 1/s with a burst of 1")
    r = retrying.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert [st for _, st, _ in seen][-1] == 200, seen
    assert seen[0][1] == 429, seen
    for (t0, st, ra), (t1, _, _) in zip(seen, seen[1:]):
        assert st == 429
        assert t1 - t0 >= int(ra) - 0.05, seen  # waited as told
