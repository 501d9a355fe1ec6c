/* A batch's gallery (one tile per image: placeholder first, then the thumbnail) and an
 * image's detail dialog. Everything from the API is set as text, never as markup. */
"use strict";

(function (pm) {
  const FINISHED_OK = new Set(["done", "duplicate"]);
  const state = { batchId: null, batch: null, images: new Map(), loading: null };
  const el = (...args) => pm.batches.el(...args);

  function formatBytes(bytes) {
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(2)} MB`;
  }

  /** The smallest rendition, WebP when there is one: the tile's thumbnail. */
  function thumbnailOf(image) {
    const renditions = image.renditions || [];
    const webp = renditions.filter((r) => r.format === "webp");
    const pool = webp.length ? webp : renditions;
    let best = null;
    for (const r of pool) if (!best || r.width * r.height < best.width * best.height) best = r;
    return best;
  }

  function statusText(image) {
    return image.status === "processing" ? "processing" : image.status;
  }

  function buildTile(image) {
    const tile = el("button", "tile");
    tile.type = "button";
    tile.dataset.imageId = image.image_id;
    tile.addEventListener("click", () => pm.router.openImage(state.batchId, image.image_id));
    const media = el("span", "tile-media");
    const placeholder = el("img", "placeholder");
    placeholder.alt = "";
    placeholder.hidden = true;
    const thumb = el("img", "thumb");
    thumb.alt = "";
    thumb.hidden = true;
    thumb.decoding = "async";
    thumb.addEventListener("load", () => thumb.classList.add("loaded"));
    media.append(placeholder, thumb);
    const caption = el("span", "tile-caption");
    caption.append(el("span", "filename"), el("span", "tile-status pill"));
    tile.append(media, caption);
    return tile;
  }

  function paintTile(tile, image) {
    tile.dataset.status = image.status;
    if (image.sha256) tile.dataset.sha256 = image.sha256;
    tile.querySelector(".filename").textContent = image.filename;
    tile.querySelector(".tile-status").textContent = statusText(image);
    tile.setAttribute("aria-label", `${image.filename}: ${statusText(image)}`);
    const placeholder = tile.querySelector("img.placeholder");
    if (image.placeholder && placeholder.dataset.hash !== image.placeholder) {
      const url = pm.thumbhash.placeholderDataUrl(image.placeholder);
      if (url) {
        placeholder.dataset.hash = image.placeholder;
        placeholder.src = url;
        placeholder.hidden = false;
      }
    }
    const thumb = tile.querySelector("img.thumb");
    const best = FINISHED_OK.has(image.status) ? thumbnailOf(image) : null;
    if (best && thumb.getAttribute("src") !== best.path) {
      thumb.src = best.path; // signed when a key is set: no header needed
      thumb.hidden = false;
    }
    const caption = tile.querySelector(".tile-caption");
    let badge = caption.querySelector(".badge-duplicate");
    if (image.status === "duplicate" && !badge) {
      caption.append(el("span", "badge-duplicate pill", "duplicate"));
    } else if (image.status !== "duplicate" && badge) {
      badge.remove();
    }
    for (const old of caption.querySelectorAll(".error-code, .error-message")) old.remove();
    if (image.error) {
      caption.append(el("span", "error-code", image.error.code));
      caption.append(el("span", "error-message", image.error.message));
    }
  }

  function paintSummary() {
    const batch = state.batch;
    const summary = document.getElementById("gallery-summary");
    if (!batch) return;
    summary.textContent =
      `Batch ${pm.batches.shortId(batch.batch_id)}, ${batch.status}: ` +
      `${pm.batches.countsText(batch)}. Elapsed ${pm.batches.elapsedText(batch)}.`;
  }

  function paintImage(image) {
    state.images.set(image.image_id, image);
    const gallery = document.getElementById("gallery");
    let tile = gallery.querySelector(`[data-image-id="${CSS.escape(image.image_id)}"]`);
    if (!tile) {
      tile = buildTile(image);
      gallery.append(tile);
    }
    paintTile(tile, image);
  }

  /** Show the gallery of `batchId` (a no-op if it is already shown). */
  async function open(batchId) {
    if (state.batchId === batchId && state.loading) return state.loading;
    if (state.batchId === batchId) return;
    state.batchId = batchId;
    state.batch = null;
    state.images.clear();
    const gallery = document.getElementById("gallery");
    gallery.replaceChildren();
    gallery.dataset.batchId = batchId;
    document.getElementById("gallery-panel").hidden = false;
    document.getElementById("gallery-title").textContent =
      `Gallery of batch ${pm.batches.shortId(batchId)}`;
    document.getElementById("gallery-summary").textContent = "Loading…";
    state.loading = (async () => {
      try {
        const batch = await pm.api.request(`/v1/batches/${batchId}`);
        if (state.batchId !== batchId) return;
        pm.batches.update(batch); // paints the gallery too
        pm.batches.syncStreams();
      } catch (error) {
        if (state.batchId !== batchId) return;
        pm.ui.showError(error);
        pm.router.closeBatch();
      } finally {
        state.loading = null;
      }
    })();
    return state.loading;
  }

  function close() {
    state.batchId = null;
    state.batch = null;
    state.images.clear();
    const gallery = document.getElementById("gallery");
    gallery.replaceChildren();
    delete gallery.dataset.batchId;
    document.getElementById("gallery-panel").hidden = true;
    pm.batches.syncStreams();
  }

  function batchUpdated(batch) {
    if (batch.batch_id !== state.batchId) return;
    const { images, ...status } = batch;
    state.batch = { ...state.batch, ...status };
    if (images) for (const image of images) paintImage(image);
    paintSummary();
  }

  function imageUpdated(batchId, image) {
    if (batchId !== state.batchId) return;
    paintImage(image);
    if (pm.detail.shownId() === image.image_id) pm.detail.show(state.batchId, image);
  }

  function tick() {
    if (state.batch && !state.batch.finished_at) paintSummary();
  }

  pm.gallery = {
    open, close, batchUpdated, imageUpdated, tick, formatBytes,
    openedId: () => state.batchId,
    image: (id) => state.images.get(id),
    ready: () => state.loading || Promise.resolve(),
    tileOf: (id) => document.querySelector(`#gallery [data-image-id="${CSS.escape(id)}"]`),
  };
})((window.pm = window.pm || {}));
