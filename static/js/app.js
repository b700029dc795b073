// The page: asks the server what it allows (/v1/info), opens the
// WebSocket, and runs one question at a time: the conversation's images
// as binary frames, the answer streamed into the transcript, Stop (or
// Esc) to cancel. Errors are said in plain words in the answer's place or
// in the banner above the question box.
//
// URL parameters (for demos and tests): max_tokens, temperature, top_p,
// top_k, seed, ignore_eos=1, lang=en|zh.

import { t, msg as tmsg, setLang, getLang, applyI18n, tClear, tSet } from "./i18n.js";
import { Connection } from "./connection.js";
import { Conversation, showQuestion, AnswerView } from "./chat.js";
import { Composer } from "./composer.js";
import { loadRenderer } from "./render.js";
import { releaseImage } from "./images.js";

const KEY_STORE = "glmserve.apiKey";
const THINK_STORE = "glmserve.thinking";
const $ = (id) => document.getElementById(id);

const info = { auth: false, max_images: 16, max_body_mb: 64, ws: true };
const params = new URLSearchParams(location.search);
const conv = new Conversation();
let conn = null;
let current = null; // {id, view, text, images}
let seq = 0;
let wasLost = false;

function storage(get, key, value) {
  try {
    if (get) return localStorage.getItem(key);
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch { /* storage off: keep nothing */ }
  return null;
}

// ---- the banner ---------------------------------------------------------------------------

/** Shows m ({key, vars}: i18n.js msg()) in the alert bar, in the page's
 *  language (re-labelled when it switches). */
function alertShow(m, sticky = false) {
  tSet($("alert-text"), m.key, m.vars);
  $("alert").hidden = false;
  $("alert").dataset.sticky = sticky ? "1" : "";
}

function alertHide() {
  $("alert").hidden = true;
}

function announce(s) {
  $("live").textContent = s;
}

// ---- errors in plain words ----------------------------------------------------------------

function retryAfter(msg) {
  if (Number.isFinite(msg.retry_after)) return msg.retry_after;
  const m = /retry after (\d+)/i.exec(msg.message || "");
  return m ? Number(m[1]) : 0;
}

function plainError(msg) {
  const status = msg.status;
  const message = msg.message || "";
  if (msg.type === "lost") return tmsg("err.lostAnswer");
  if (status === 401) return tmsg("err.401");
  if (status === 429) {
    const s = retryAfter(msg);
    return s ? tmsg("err.429", { s }) : tmsg("err.429any");
  }
  if (status === 503) return tmsg("err.503");
  if (status === 413 || status === 415 || (status === 400 && /image/i.test(message))) {
    return tmsg("err.image", { msg: message });
  }
  if (status === 400) return tmsg("err.400", { msg: message });
  return tmsg("err.other", { status: status || "?", msg: message });
}

// ---- asking -------------------------------------------------------------------------------

function options() {
  const o = {};
  for (const k of ["max_tokens", "temperature", "top_p", "top_k", "seed"]) {
    const v = params.get(k);
    if (v !== null && v !== "" && Number.isFinite(Number(v))) o[k] = Number(v);
  }
  if (o.max_tokens === undefined) o.max_tokens = 4096;
  if (params.get("ignore_eos") === "1") o.ignore_eos = true;
  if (!$("thinking").checked) o.chat_template_kwargs = { enable_thinking: false };
  return o;
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

function scrollDown(force) {
  const log = $("log");
  const near = log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  if (force || near) log.scrollTop = log.scrollHeight;
}

let starting = false; // between Enter and the ask leaving (images being read)

async function ask() {
  if (current || starting) return;
  starting = true;
  try {
    await startAsk();
  } finally {
    starting = false;
  }
}

async function startAsk() {
  await composer.pending; // images still being decoded
  const peek = composer.input.value.trim();
  if (!peek && !composer.images.length) return;
  if (!conn) return alertShow(tmsg("err.noWs"));
  if (!conn.ready) {
    if (conn.state === "key") return openKeyDialog();
    return alertShow(tmsg("err.offline"));
  }
  alertHide();
  const { text, images } = composer.take();
  const messages = conv.messages(text, images);
  const all = [...conv.images(), ...images];
  const frames = await Promise.all(all.map((img) => img.blob.arrayBuffer()));
  conv.add({ role: "user", text, images });
  $("empty").hidden = true;
  showQuestion($("turns"), text, images);
  const view = new AnswerView($("turns"));
  const id = `q${++seq}-${Date.now().toString(36)}`;
  current = { id, view, text, images };
  setBusy(true);
  scrollDown(true);
  conn.ask(id, { messages, ...options() }, frames, (msg) => onAnswer(id, msg));
}

function onAnswer(id, msg) {
  if (!current || current.id !== id) return;
  const view = current.view;
  if (msg.type === "delta") {
    view.delta(msg);
    requestAnimationFrame(() => scrollDown(false));
    return;
  }
  if (msg.type === "queued") {
    view.queued(msg.position);
    return;
  }
  const { text, images } = current;
  current = null;
  setBusy(false);
  if (msg.type === "done") {
    view.done(msg);
    conv.add({ role: "assistant", content: view.content });
    announce(msg.finish_reason === "cancelled" ? t("live.stopped") : t("live.done"));
  } else {
    // error or lost: the question leaves the history and goes back into the box
    view.fail(plainError(msg));
    conv.pop();
    composer.restore(text, images);
    if (msg.status === 401) openKeyDialog(tmsg("err.401"));
  }
  scrollDown(false);
  if (document.activeElement === document.body || document.activeElement === $("stop")) {
    composer.input.focus();
  }
}

function stop() {
  if (!current) return;
  if (!conn.cancel(current.id)) setBusy(false);
}

function newChat() {
  if (current) stop();
  current = null;
  setBusy(false);
  conv.images().forEach(releaseImage);
  conv.clear();
  composer.clear();
  $("turns").replaceChildren();
  $("empty").hidden = false;
  alertHide();
  composer.input.focus();
}

// ---- the key ------------------------------------------------------------------------------

/** reason: why (msg() of i18n.js), or none. */
function openKeyDialog(reason) {
  const d = $("key-dialog");
  $("key-button").hidden = false;
  $("key-error").hidden = !reason;
  if (reason) tSet($("key-error"), reason.key, reason.vars);
  else tClear($("key-error"));
  $("key-input").value = storage(true, KEY_STORE) || "";
  if (!d.open) d.showModal();
  $("key-input").focus();
}

function wireKeyDialog() {
  const d = $("key-dialog");
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    storage(false, KEY_STORE, key);
    d.close();
    $("key-button").hidden = false;
    if (conn) conn.setKey(key);
  });
  $("key-cancel").addEventListener("click", () => d.close());
  $("key-button").addEventListener("click", () => openKeyDialog());
}

// ---- the connection -----------------------------------------------------------------------

function onConnState(ev) {
  const { state, retryIn } = ev.detail;
  const badge = $("conn");
  badge.dataset.state = state;
  badge.querySelector(".conn-text").textContent = t(`conn.${state}`);
  if (state === "closed" && conn.everOpen) {
    wasLost = true;
    alertShow(tmsg("err.lost", { s: Math.max(1, Math.round(retryIn / 1000)) }), true);
  } else if (state === "open" && wasLost) {
    wasLost = false;
    if ($("alert").dataset.sticky) alertHide();
    announce(t("reconnected"));
  }
}

function startConnection() {
  if (!info.ws) {
    alertShow(tmsg("err.noWs"), true); // a build without libwslay: nothing to talk to
    return;
  }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  conn = new Connection(`${proto}//${location.host}/v1/ws`);
  conn.addEventListener("state", onConnState);
  conn.addEventListener("keyrefused", () => openKeyDialog(tmsg("key.refused")));
  conn.addEventListener("notice", (ev) => alertShow(plainError(ev.detail)));
  const key = storage(true, KEY_STORE);
  if (key) conn.key = key;
  if (info.auth) $("key-button").hidden = false;
  conn.connect();
  if (info.auth && !key) openKeyDialog();
}

async function loadInfo() {
  try {
    const r = await fetch("/v1/info", { cache: "no-store" });
    if (r.ok) Object.assign(info, await r.json());
  } catch { /* an older server: keep the defaults, learn the key from a 401 */ }
  try {
    const key = storage(true, KEY_STORE);
    const r = await fetch("/v1/models", key ? { headers: { Authorization: `Bearer ${key}` } } : {});
    const data = r.ok ? await r.json() : null;
    const m = data && data.data && data.data[0];
    if (m) {
      $("model").textContent = m.id;
      if (info.version) $("model").title = `glmserve ${info.version}`;
      $("model").hidden = false;
    }
  } catch { /* the name is decoration */ }
}

// ---- start --------------------------------------------------------------------------------

const composer = new Composer({
  limit: () => info.max_images - conv.images().length,
  maxImages: () => info.max_images,
  maxBytes: () => info.max_body_mb * 1048576,
  onError: (m) => alertShow(m),
  onSubmit: ask,
});

function wire() {
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
  $("alert-close").addEventListener("click", alertHide);
  $("lang").addEventListener("click", () => setLang(getLang() === "zh" ? "en" : "zh"));
  document.addEventListener("langchange", labelLang);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && current && !$("key-dialog").open) {
      ev.preventDefault();
      stop();
    }
  });
  const think = $("thinking");
  think.checked = storage(true, THINK_STORE) !== "off";
  think.addEventListener("change", () => storage(false, THINK_STORE, think.checked ? "on" : "off"));
  wireKeyDialog();
}

function labelLang() {
  const b = $("lang");
  const zh = getLang() === "zh";
  b.textContent = zh ? "English" : "中文";
  b.lang = zh ? "en" : "zh";
  if (conn) $("conn").querySelector(".conn-text").textContent = t(`conn.${conn.state}`);
}

async function main() {
  const l = params.get("lang");
  if (l) setLang(l);
  applyI18n(document);
  labelLang();
  wire();
  composer.show();
  composer.input.focus();
  await Promise.all([loadInfo(), loadRenderer()]);
  startConnection();
  document.body.dataset.ready = "1";
}

main();
