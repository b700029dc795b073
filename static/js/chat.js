// The conversation: what has been said (for the next ask) and how it is
// shown (the transcript).
//
// Every ask resends the whole conversation, so the model sees its earlier
// images on a follow-up question: each image of the conversation travels
// again as a binary frame, referenced from its turn by an image_ref part
// whose index is its place among the conversation's images. The server's
// prefix cache makes the repeat cheap. Past answers go back as plain
// assistant text; their thinking is not resent.

import { ms, tAttr, tClear, tSet } from "./i18n.js";
import { renderInto } from "./render.js";

export class Conversation {
  constructor() {
    this.turns = []; // {role: "user", text, images} | {role: "assistant", content}
  }

  /** Every image of the conversation, in the order of their indices. */
  images() {
    return this.turns.flatMap((u) => (u.role === "user" ? u.images : []));
  }

  /** The ask's messages: the history, then a new user turn. */
  messages(text, images) {
    const out = [];
    let index = 0;
    const user = (txt, imgs) => {
      const parts = imgs.map(() => ({ type: "image_ref", index: index++ }));
      if (txt) parts.push({ type: "text", text: txt });
      return { role: "user", content: parts };
    };
    for (const turn of this.turns) {
      if (turn.role === "user") out.push(user(turn.text, turn.images));
      else out.push({ role: "assistant", content: turn.content });
    }
    out.push(user(text, images));
    return out;
  }

  add(turn) {
    this.turns.push(turn);
  }

  /** Drops the last turn (a question that failed). */
  pop() {
    return this.turns.pop();
  }

  clear() {
    this.turns = [];
  }
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Appends the user's turn (text and image thumbnails) to the list. */
export function showQuestion(list, text, images) {
  const li = el("li", "turn user");
  li.append(tSet(el("span", "who visually-hidden"), "you"));
  const bubble = el("div", "bubble");
  if (images.length) {
    const row = el("div", "pics");
    images.forEach((img, i) => {
      const im = el("img");
      im.src = img.url;
      if (img.name) im.alt = img.name;
      else tAttr(im, "alt", "image", { n: i + 1 });
      if (img.resized) tAttr(im, "title", "resized", { name: img.name, w: img.width, h: img.height });
      else im.title = img.name;
      row.append(im);
    });
    bubble.append(row);
  }
  if (text) bubble.append(el("p", "text", text));
  li.append(bubble);
  list.append(li);
  return li;
}

/** The answer being streamed: thinking apart and collapsed, the answer as
 *  Markdown (re-rendered at most once a frame), a status line (queue,
 *  errors) and the numbers (time to first token, tokens/s). */
export class AnswerView {
  constructor(list) {
    this.li = el("li", "turn assistant");
    this.li.setAttribute("aria-busy", "true");
    this.li.append(tSet(el("span", "who visually-hidden"), "assistant"));
    this.think = el("details", "thinking");
    this.think.hidden = true;
    this.thinkSummary = tSet(el("summary"), "think.live");
    this.thinkBody = el("div", "think-text");
    this.think.append(this.thinkSummary, this.thinkBody);
    this.body = el("div", "answer md");
    this.status = el("p", "status");
    this.status.append(el("span", "pulse"), tSet(el("span", "status-text"), "waiting"));
    this.stats = el("p", "stats");
    this.stats.hidden = true;
    this.li.append(this.think, this.body, this.status, this.stats);
    list.append(this.li);
    this.content = "";
    this.reasoning = "";
    this.t0 = performance.now();
    this.tFirst = 0;
    this.tThinkEnd = 0;
    this.pieces = 0;
    this.frame = 0;
    this.finishKey = "";
  }

  /** The status line: key (with vars), or none. */
  setStatus(key, vars) {
    this.status.hidden = !key;
    if (key) tSet(this.status.lastChild, key, vars);
    else tClear(this.status.lastChild);
  }

  queued(position) {
    if (position > 0) this.setStatus("queued", { n: position });
    else this.setStatus("prefill");
  }

  delta(msg) {
    const now = performance.now();
    if (!this.tFirst) {
      this.tFirst = now;
      this.setStatus(null);
    }
    this.pieces++;
    if (msg.reasoning) {
      this.reasoning += msg.reasoning;
      this.think.hidden = false;
    }
    if (msg.content) {
      if (this.reasoning && !this.tThinkEnd) this.tThinkEnd = now;
      this.content += msg.content;
    }
    if (!this.frame) this.frame = requestAnimationFrame(() => this.paint());
  }

  paint() {
    this.frame = 0;
    this.thinkBody.textContent = this.reasoning;
    if (this.reasoning) this.labelThinking();
    renderInto(this.body, this.content);
    this.showStats();
  }

  labelThinking() {
    if (this.tThinkEnd) {
      tSet(this.thinkSummary, "think.done",
        { s: ((this.tThinkEnd - this.tFirst) / 1000).toFixed(1) });
    } else {
      tSet(this.thinkSummary, "think.live");
    }
  }

  /** The numbers line: each part its own translatable span. */
  showStats(done) {
    const bits = [];
    if (this.finishKey) bits.push([this.finishKey, {}, "finish"]);
    if (this.tFirst) bits.push(["ttft", { v: ms(this.tFirst - this.t0) }]);
    let tokens = this.pieces;
    let rate = 0;
    if (done && done.usage) {
      tokens = done.usage.completion_tokens;
      const dms = done.timings && done.timings.decode_ms;
      if (dms > 0 && tokens > 1) rate = (tokens - 1) / (dms / 1000);
    } else if (this.tFirst && this.pieces > 1) {
      const span = performance.now() - this.tFirst;
      if (span > 0) rate = (this.pieces - 1) / (span / 1000);
    }
    if (tokens) bits.push(["tokens", { n: tokens }]);
    if (rate) bits.push(["speed", { v: rate >= 100 ? Math.round(rate) : rate.toFixed(1) }]);
    this.stats.hidden = bits.length === 0;
    const parts = [];
    bits.forEach(([key, vars, cls], i) => {
      if (i) parts.push(" · ");
      parts.push(tSet(el("span", cls), key, vars));
    });
    this.stats.replaceChildren(...parts);
  }

  /** The ask's done message arrived. */
  done(msg) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.paint();
    this.li.removeAttribute("aria-busy");
    this.think.open = false;
    if (this.reasoning && !this.tThinkEnd) {
      this.tThinkEnd = performance.now();
      this.labelThinking();
    }
    this.li.dataset.finish = msg.finish_reason || "";
    this.finishKey = { cancelled: "finish.cancelled", length: "finish.length" }[msg.finish_reason]
      || "";
    this.showStats(msg);
    this.setStatus(null);
  }

  /** The ask failed: m ({key, vars}: msg()) says why, in plain words. */
  fail(m) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.paint();
    this.li.removeAttribute("aria-busy");
    this.li.classList.add("failed");
    this.setStatus(null);
    const p = tSet(el("p", "error"), m.key, m.vars);
    p.setAttribute("role", "alert");
    this.li.append(p);
  }
}

