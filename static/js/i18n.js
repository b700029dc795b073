// Interface text in English and Chinese. The language follows the
// browser (navigator.languages) until the user picks one with the switch;
// the choice is kept in localStorage. Elements carry their key in
// data-i18n (text) or data-i18n-attr ("placeholder:key;aria-label:key").

const STRINGS = {
  en: {
    skip: "Skip to the question",
    conversation: "Conversation",
    newChat: "New chat",
    "conn.connecting": "Connecting…",
    "conn.open": "Connected",
    "conn.closed": "Offline",
    "conn.key": "Needs a key",
    "empty.title": "Ask about an image",
    "empty.body": "Drop an image here, paste one, or pick a file. Then ask a question.",
    "empty.pick": "Choose an image",
    attachments: "Images for the next question",
    question: "Question",
    placeholder: "Ask about the image…",
    attach: "Add image",
    thinking: "Thinking",
    hint: "Enter to send · Shift+Enter for a new line · Esc to stop",
    send: "Send",
    stop: "Stop",
    close: "Close",
    dropHere: "Drop the image to add it",
    removeImage: "Remove image {n}",
    image: "Image {n}",
    resized: "{name}, resized to {w}×{h}",
    you: "You",
    assistant: "Answer",
    "think.live": "Thinking…",
    "think.done": "Thought for {s} s",
    queued: "Waiting in line: {n} ahead",
    prefill: "Reading the question…",
    waiting: "Sending…",
    ttft: "first token {v}",
    speed: "{v} tokens/s",
    tokens: "{n} tokens",
    "finish.cancelled": "Stopped",
    "finish.length": "Stopped at the length limit",
    "key.button": "API key",
    "key.title": "API key",
    "key.body": "This server needs an API key. It is kept in this browser only.",
    "key.label": "Key",
    "key.cancel": "Cancel",
    "key.save": "Save",
    "key.refused": "The server did not accept this API key. Check it and try again.",
    "err.401": "The server did not accept the API key. Enter a valid key to continue.",
    "err.429": "Too many requests. Please wait {s} s and try again.",
    "err.429any": "Too many requests. Please wait a moment and try again.",
    "err.503": "The server is busy right now. Please try again in a moment.",
    "err.image": "The server could not use an image: {msg}",
    "err.400": "The server did not accept the question: {msg}",
    "err.other": "Something went wrong (status {status}): {msg}",
    "err.lost": "The connection to the server was lost. Reconnecting in {s} s…",
    "err.lostAnswer": "The connection was lost before the answer was finished.",
    "err.notImage": "“{name}” is not an image. Choose a JPEG, PNG, WebP or GIF picture.",
    "err.unreadable": "“{name}” could not be read as an image.",
    "err.tooBig": "“{name}” is too large to send ({mb} MB; the server takes {max} MB).",
    "err.tooMany": "A conversation can hold at most {n} images. Start a new chat for more.",
    "err.offline": "Not connected to the server yet. Please wait a moment.",
    "err.noWs": "This server has no WebSocket support, so the page cannot talk to it.",
    "live.done": "The answer is complete.",
    "live.stopped": "The answer was stopped.",
    reconnected: "Connected again.",
  },
  zh: {
    skip: "跳到提问框",
    conversation: "对话",
    newChat: "新对话",
    "conn.connecting": "正在连接…",
    "conn.open": "已连接",
    "conn.closed": "未连接",
    "conn.key": "需要密钥",
    "empty.title": "看图提问",
    "empty.body": "把图片拖到这里、粘贴，或选择文件，然后提出问题。",
    "empty.pick": "选择图片",
    attachments: "下一个问题的图片",
    question: "问题",
    placeholder: "关于这张图片，想问什么？",
    attach: "添加图片",
    thinking: "思考",
    hint: "Enter 发送 · Shift+Enter 换行 · Esc 停止",
    send: "发送",
    stop: "停止",
    close: "关闭",
    dropHere: "松开即可添加图片",
    removeImage: "移除第 {n} 张图片",
    image: "图片 {n}",
    resized: "{name}，已缩小为 {w}×{h}",
    you: "你",
    assistant: "回答",
    "think.live": "思考中…",
    "think.done": "思考了 {s} 秒",
    queued: "排队中：前面还有 {n} 个",
    prefill: "正在读取问题…",
    waiting: "正在发送…",
    ttft: "首字 {v}",
    speed: "{v} 词元/秒",
    tokens: "{n} 个词元",
    "finish.cancelled": "已停止",
    "finish.length": "已达长度上限",
    "key.button": "API 密钥",
    "key.title": "API 密钥",
    "key.body": "此服务器需要 API 密钥。密钥只保存在这个浏览器里。",
    "key.label": "密钥",
    "key.cancel": "取消",
    "key.save": "保存",
    "key.refused": "服务器不接受这个 API 密钥，请检查后重试。",
    "err.401": "服务器不接受 API 密钥，请输入有效的密钥后继续。",
    "err.429": "请求太多了，请等 {s} 秒后再试。",
    "err.429any": "请求太多了，请稍等片刻再试。",
    "err.503": "服务器现在很忙，请稍后再试。",
    "err.image": "服务器无法处理图片：{msg}",
    "err.400": "服务器没有接受这个问题：{msg}",
    "err.other": "出错了（状态 {status}）：{msg}",
    "err.lost": "与服务器的连接断开了，{s} 秒后重新连接…",
    "err.lostAnswer": "回答还没完成，连接就断开了。",
    "err.notImage": "“{name}” 不是图片，请选择 JPEG、PNG、WebP 或 GIF 图片。",
    "err.unreadable": "无法把 “{name}” 读取为图片。",
    "err.tooBig": "“{name}” 太大了（{mb} MB；服务器最多接收 {max} MB）。",
    "err.tooMany": "一个对话最多 {n} 张图片。要添加更多，请开始新对话。",
    "err.offline": "还没有连上服务器，请稍候。",
    "err.noWs": "此服务器不支持 WebSocket，页面无法与它通信。",
    "live.done": "回答完成。",
    "live.stopped": "回答已停止。",
    reconnected: "已重新连接。",
  },
};

const STORE = "glmserve.lang";
let lang = initial();

function initial() {
  let saved = null;
  try { saved = localStorage.getItem(STORE); } catch { /* storage off */ }
  if (saved && STRINGS[saved]) return saved;
  const wanted = navigator.languages && navigator.languages.length
    ? navigator.languages : [navigator.language || "en"];
  for (const l of wanted) {
    const base = String(l).toLowerCase().split("-")[0];
    if (STRINGS[base]) return base;
  }
  return "en";
}

/** The text of key in the current language, with {name} filled from vars. */
export function t(key, vars = {}) {
  const s = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
}

export function getLang() {
  return lang;
}

/** Switches the language, remembers it, and re-labels the page. */
export function setLang(l) {
  if (!STRINGS[l]) return;
  lang = l;
  try { localStorage.setItem(STORE, l); } catch { /* storage off */ }
  applyI18n(document);
  document.dispatchEvent(new CustomEvent("langchange", { detail: l }));
}

/** A text to show in whatever language is current then: key and vars. */
export function msg(key, vars = {}) {
  return { key, vars };
}

/** Sets el's text to key (vars filled) and keeps both on el, so that a
 *  language switch re-labels it (applyI18n). Returns el. */
export function tSet(el, key, vars = {}) {
  el.dataset.i18n = key;
  if (Object.keys(vars).length) el.dataset.i18nVars = JSON.stringify(vars);
  else delete el.dataset.i18nVars;
  el.textContent = t(key, vars);
  return el;
}

/** The same for one attribute of el (alt, title, aria-label). */
export function tAttr(el, attr, key, vars = {}) {
  const pairs = (el.dataset.i18nAttr ? el.dataset.i18nAttr.split(";") : [])
    .filter((p) => p.split(":")[0] !== attr);
  pairs.push(`${attr}:${key}`);
  el.dataset.i18nAttr = pairs.join(";");
  const all = el.dataset.i18nAttrVars ? JSON.parse(el.dataset.i18nAttrVars) : {};
  all[attr] = vars;
  el.dataset.i18nAttrVars = JSON.stringify(all);
  el.setAttribute(attr, t(key, vars));
  return el;
}

/** Plain text on el (a user's words, or nothing): no longer re-labelled. */
export function tClear(el, text = "") {
  delete el.dataset.i18n;
  delete el.dataset.i18nVars;
  el.textContent = text;
  return el;
}

/** Fills every data-i18n / data-i18n-attr element under root, with the
 *  vars kept beside them (tSet, tAttr). */
export function applyI18n(root) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n, el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : {});
  }
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    const vars = el.dataset.i18nAttrVars ? JSON.parse(el.dataset.i18nAttrVars) : {};
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":");
      el.setAttribute(attr, t(key, vars[attr] || {}));
    }
  }
}

/** A number of milliseconds as "85 ms" or "1.2 s". */
export function ms(v) {
  return v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`;
}
