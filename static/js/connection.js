// The WebSocket to /v1/ws (docs/api.md, "WebSocket /v1/ws"): one socket
// for the page, an optional auth message first, asks tagged with an id
// whose images follow as binary frames, and a handler per ask that gets
// every server message with its id (delta, queued, done, error).
//
// A lost socket reconnects with a doubling delay (0.5 s up to 15 s, with
// jitter); the asks it carried end with {type: "lost"}. A refused key
// (an error with status 401, then close 1008) does not reconnect until a
// new key is set. Events on the Connection (an EventTarget):
//   "state"   detail {state: "connecting"|"open"|"closed"|"key", retryIn}
//   "keyrefused"  the server refused the key (or wanted one)
//   "notice"  detail: a server error that belongs to no ask

const MIN_DELAY = 500;
const MAX_DELAY = 15000;

export class Connection extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.key = "";
    this.ws = null;
    this.state = "closed";
    this.handlers = new Map(); // ask id -> function(message)
    this.delay = MIN_DELAY;
    this.timer = 0;
    this.everOpen = false;
    this.keyRefused = false;
  }

  /** Opens the socket (again). */
  connect() {
    clearTimeout(this.timer);
    this.timer = 0;
    if (this.ws) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.setState("connecting");
    ws.onopen = () => {
      if (this.key) this.rawSend({ type: "auth", key: this.key });
      this.delay = MIN_DELAY;
      this.everOpen = true;
      this.setState("open");
    };
    ws.onmessage = (ev) => this.onMessage(ev);
    ws.onclose = (ev) => this.onClose(ws, ev);
  }

  /** Sets the API key; sends it at once when the socket is open, or reconnects. */
  setKey(key) {
    this.key = key;
    this.keyRefused = false;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.rawSend({ type: "auth", key });
    } else if (!this.ws) {
      this.delay = MIN_DELAY;
      this.connect();
    }
  }

  get ready() {
    return this.state === "open";
  }

  /** Sends one ask and its image frames (ArrayBuffers, in index order).
   *  handler(message) gets each server message for the ask. */
  ask(id, body, frames, handler) {
    this.handlers.set(id, handler);
    this.rawSend({ ...body, type: "ask", id, images: frames.length });
    for (const f of frames) this.ws.send(f);
  }

  /** Asks the server to stop an ask; its done (cancelled) follows. */
  cancel(id) {
    if (!this.handlers.has(id)) return false;
    if (!this.ready) {
      this.finish(id, { type: "lost", id });
      return false;
    }
    this.rawSend({ type: "cancel", id });
    return true;
  }

  rawSend(obj) {
    this.ws.send(JSON.stringify(obj));
  }

  setState(state, retryIn = 0) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, retryIn } }));
  }

  finish(id, msg) {
    const h = this.handlers.get(id);
    this.handlers.delete(id);
    if (h) h(msg);
  }

  onMessage(ev) {
    if (typeof ev.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === "auth") return;
    if (msg.type === "error" && msg.status === 401) this.keyRefused = true;
    const id = msg.id;
    if (id == null || !this.handlers.has(id)) {
      if (msg.type === "error" && msg.status === 401) {
        this.dispatchEvent(new CustomEvent("keyrefused"));
      } else if (msg.type === "error") {
        this.dispatchEvent(new CustomEvent("notice", { detail: msg }));
      }
      return;
    }
    if (msg.type === "done" || msg.type === "error") this.finish(id, msg);
    else this.handlers.get(id)(msg);
  }

  onClose(ws, ev) {
    if (this.ws !== ws) return;
    this.ws = null;
    const refused = ev.code === 1008 || this.keyRefused;
    for (const id of [...this.handlers.keys()]) {
      this.finish(id, refused ? { type: "error", id, status: 401, message: ev.reason } :
        { type: "lost", id });
    }
    if (refused) {
      this.setState("key");
      return; // setKey() reconnects
    }
    this.scheduleRetry();
  }

  scheduleRetry() {
    const wait = Math.round(this.delay * (0.8 + Math.random() * 0.4));
    this.delay = Math.min(this.delay * 2, MAX_DELAY);
    this.setState("closed", wait);
    this.timer = setTimeout(() => this.connect(), wait);
  }
}
