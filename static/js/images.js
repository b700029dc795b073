// Images picked, dropped or pasted: checked, decoded by the browser, and
// downscaled before they are sent. A JPEG or PNG whose long side is at
// most MAX_SIDE px travels as its own bytes (the server reads its EXIF
// orientation); anything larger, or another format the browser can
// decode (WebP, GIF, BMP, AVIF), is drawn onto a canvas at most MAX_SIDE
// px on its long side and sent as a JPEG. The model sees at most a few
// megapixels anyway, so a 4000 px photo never crosses the network whole.

export const MAX_SIDE = 1536;
const JPEG_QUALITY = 0.9;
const NAME_RE = /\.(jpe?g|png|webp|gif|bmp|avif)$/i;

/** An image that could not be taken: kind is "notImage" or "unreadable". */
export class ImageError extends Error {
  constructor(kind, name) {
    super(`${kind}: ${name}`);
    this.kind = kind;
    this.fileName = name;
  }
}

async function magic(blob) {
  const b = new Uint8Array(await blob.slice(0, 8).arrayBuffer());
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "png";
  return "";
}

function canvasBlob(canvas, type, quality) {
  if (canvas.convertToBlob) return canvas.convertToBlob({ type, quality });
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("encode"))), type, quality));
}

function makeCanvas(w, h) {
  if (typeof OffscreenCanvas !== "undefined") return new OffscreenCanvas(w, h);
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  return c;
}

/** Reads a File (or Blob with a name) into
 *  {blob, url, name, width, height, resized}; throws ImageError. */
export async function prepareImage(file) {
  const name = file.name || "image";
  if (!(file.type || "").startsWith("image/") && !NAME_RE.test(name)) {
    throw new ImageError("notImage", name);
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new ImageError("unreadable", name);
  }
  const w = bitmap.width;
  const h = bitmap.height;
  if (!w || !h) throw new ImageError("unreadable", name);
  const kind = await magic(file);
  let blob = file;
  let width = w;
  let height = h;
  let resized = false;
  if (!kind || Math.max(w, h) > MAX_SIDE) {
    const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
    width = Math.max(1, Math.round(w * scale));
    height = Math.max(1, Math.round(h * scale));
    const canvas = makeCanvas(width, height);
    const g = canvas.getContext("2d");
    g.fillStyle = "#fff"; // JPEG has no alpha: transparent parts become white
    g.fillRect(0, 0, width, height);
    g.imageSmoothingQuality = "high";
    g.drawImage(bitmap, 0, 0, width, height);
    blob = await canvasBlob(canvas, "image/jpeg", JPEG_QUALITY);
    resized = scale < 1;
  }
  bitmap.close();
  return { blob, url: URL.createObjectURL(blob), name, width, height, resized };
}

/** Frees an image's preview URL. */
export function releaseImage(img) {
  if (img && img.url) URL.revokeObjectURL(img.url);
}

