// The question box and its images: pick (button or the empty page's
// button), drop anywhere on the page, or paste; previews with a remove
// button each; a textarea that grows with its text; Enter sends,
// Shift+Enter starts a new line (and Enter while an input method is
// composing, e.g. pinyin, is left to it).

import { msg, tAttr } from "./i18n.js";
import { prepareImage, releaseImage, ImageError } from "./images.js";

export class Composer {
  /** opts: {limit(): images still allowed, maxBytes(): per image,
   *  onError(m: a msg() of i18n.js), onSubmit()} */
  constructor(opts) {
    this.opts = opts;
    this.images = [];
    this.busy = false;
    this.form = document.getElementById("composer");
    this.input = document.getElementById("question");
    this.list = document.getElementById("attachments");
    this.file = document.getElementById("file");
    this.drop = document.getElementById("drop");
    this.pending = Promise.resolve();
    this.wire();
  }

  wire() {
    document.getElementById("attach").addEventListener("click", () => this.file.click());
    document.getElementById("empty-pick").addEventListener("click", () => this.file.click());
    this.file.addEventListener("change", () => {
      const files = [...this.file.files];
      this.file.value = "";
      this.addFiles(files);
    });
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.opts.onSubmit();
    });
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        this.opts.onSubmit();
      }
    });
    this.input.addEventListener("input", () => this.grow());
    document.addEventListener("paste", (ev) => {
      const files = [...(ev.clipboardData ? ev.clipboardData.files : [])];
      if (files.length) {
        ev.preventDefault();
        this.addFiles(files);
      }
    });
    let depth = 0;
    const hasFiles = (ev) => ev.dataTransfer && [...ev.dataTransfer.types].includes("Files");
    window.addEventListener("dragenter", (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth++;
      this.drop.hidden = false;
    });
    window.addEventListener("dragover", (ev) => {
      if (hasFiles(ev)) ev.preventDefault();
    });
    window.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) this.drop.hidden = true;
    });
    window.addEventListener("drop", (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth = 0;
      this.drop.hidden = true;
      this.addFiles([...ev.dataTransfer.files]);
    });
  }

  grow() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 220)}px`;
  }

  /** Checks, decodes and downscales files, then shows their previews.
   *  Resolves when they are all in (or refused with a message). */
  addFiles(files) {
    this.pending = this.pending.then(async () => {
      for (const f of files) {
        if (this.opts.limit() - this.images.length <= 0) {
          this.opts.onError(msg("err.tooMany", { n: this.opts.maxImages() }));
          break;
        }
        try {
          const img = await prepareImage(f);
          const max = this.opts.maxBytes();
          if (max && img.blob.size > max) {
            releaseImage(img);
            this.opts.onError(msg("err.tooBig", {
              name: img.name, mb: (img.blob.size / 1048576).toFixed(1), max: max / 1048576,
            }));
            continue;
          }
          this.images.push(img);
        } catch (e) {
          if (!(e instanceof ImageError)) throw e;
          this.opts.onError(msg(e.kind === "notImage" ? "err.notImage" : "err.unreadable",
            { name: e.fileName }));
        }
      }
      this.show();
    });
    return this.pending;
  }

  show() {
    this.list.replaceChildren();
    this.images.forEach((img, i) => {
      const li = document.createElement("li");
      const im = document.createElement("img");
      im.src = img.url;
      im.alt = img.name;
      if (img.resized) tAttr(im, "title", "resized", { name: img.name, w: img.width, h: img.height });
      else im.title = img.name;
      const rm = document.createElement("button");
      rm.type = "button";
      rm.className = "remove";
      tAttr(rm, "aria-label", "removeImage", { n: i + 1 });
      rm.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M7 7l10 10M17 7L7 17"/></svg>';
      rm.addEventListener("click", () => {
        releaseImage(this.images.splice(i, 1)[0]);
        this.show();
        (this.list.querySelector("button.remove") || this.input).focus();
      });
      li.append(im, rm);
      this.list.append(li);
    });
    this.list.hidden = this.images.length === 0;
  }

  /** Takes the question and its images out of the box (for an ask). */
  take() {
    const out = { text: this.input.value.trim(), images: this.images };
    this.images = [];
    this.input.value = "";
    this.grow();
    this.show();
    return out;
  }

  /** Puts a question back (after it failed), unless something new is typed. */
  restore(text, images) {
    if (!this.input.value.trim()) this.input.value = text;
    this.images = [...images, ...this.images];
    this.grow();
    this.show();
  }

  /** Frees every preview (new chat). */
  clear() {
    this.images.forEach(releaseImage);
    this.images = [];
    this.input.value = "";
    this.grow();
    this.show();
  }
}
