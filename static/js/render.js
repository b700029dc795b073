// Answers as Markdown, with no way for the model's text to run code.
//
// marked (Debian's libjs-marked) turns the text into HTML and DOMPurify
// (node-dompurify) removes everything that could act: <script>, event
// handler attributes (<img onerror>), javascript: and data: links, <style>,
// forms, frames. Both are served by the gateway under /vendor/ and loaded
// once; when either is missing the answer is shown as plain text (set
// through textContent, so it is just as inert). The page's
// Content-Security-Policy (scripts from this origin only) is a second wall.

const VENDOR = ["/vendor/marked.min.js", "/vendor/purify.min.js"];
const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "svg", "math"],
  FORBID_ATTR: ["style", "id", "name"],
  ALLOW_DATA_ATTR: false,
};

let lib = null; // {marked, purify} once both loaded
let loading = null;

function loadScript(src) {
  return new Promise((resolve) => {
    const s = document.createElement("script");
    s.src = src;
    s.async = true;
    s.onload = () => resolve(true);
    s.onerror = () => resolve(false);
    document.head.append(s);
  });
}

/** Loads marked and DOMPurify; resolves true when Markdown is available. */
export function loadRenderer() {
  if (!loading) {
    loading = (async () => {
      const ok = await Promise.all(VENDOR.map(loadScript));
      const m = globalThis.marked;
      const p = globalThis.DOMPurify;
      if (!ok.every(Boolean) || !m || typeof m.parse !== "function" || !p || !p.sanitize) {
        return false;
      }
      m.setOptions({ gfm: true, breaks: true, headerIds: false, mangle: false });
      p.addHook("afterSanitizeAttributes", (node) => {
        if (node.tagName === "A") {
          node.setAttribute("target", "_blank");
          node.setAttribute("rel", "noopener noreferrer nofollow");
        }
      });
      lib = { marked: m, purify: p };
      return true;
    })();
  }
  return loading;
}

/** True when answers are rendered as Markdown (false: plain text). */
export function hasMarkdown() {
  return lib !== null;
}

/** Shows text in el: sanitized Markdown, or plain text without the libraries. */
export function renderInto(el, text) {
  if (!lib) {
    el.classList.add("plain");
    el.textContent = text;
    return;
  }
  el.classList.remove("plain");
  let html;
  try {
    html = lib.marked.parse(text);
  } catch {
    el.classList.add("plain");
    el.textContent = text;
    return;
  }
  const frag = lib.purify.sanitize(html, { ...PURIFY, RETURN_DOM_FRAGMENT: true });
  el.replaceChildren(frag);
}
