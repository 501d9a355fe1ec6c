/* A batch's gallery (one tile per image: placeholder first, then the thumbnail) and an
 * image's detail dialog. Everything from the API is set as text, never as markup. */
"use strict";

(function (pm) {
  const FINISHED_OK = new Set(["done", "duplicate"]);
  const FINAL = new Set(["done", "duplicate", "failed", "cancelled"]);
  const state = {
    batchId: null,
    batch: null,
    images: new Map(),
    order: [], // image ids in the batch's order (GET /v1/batches/{id}): the tiles' order
    loading: null, // the pending GET of the opened batch
    reread: false, // the opened batch was re-read once after it was seen finished
  };
  const el = (...args) => pm.batches.el(...args);

  function formatBytes(bytes) {
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(2)} MB`;
  }

  /** The tile's thumbnail: the whole image (a preset that fits `inside`, not a `cover`
   * crop, whose edges the placeholder would show around it), WebP first, smallest first. */
  function thumbnailOf(image) {
    const fit = (r) => pm.ui.presetFit(r.name); // null until the catalogue is loaded
    const fitRank = (r) => (fit(r) === "inside" ? 0 : fit(r) === null ? 1 : 2);
    const rank = (r) => [fitRank(r), r.format === "webp" ? 0 : 1, r.width * r.height];
    const before = (a, b) => {
      const i = a.findIndex((value, index) => value !== b[index]);
      return i >= 0 && a[i] < b[i];
    };
    let best = null;
    for (const r of image.renditions || []) if (!best || before(rank(r), rank(best))) best = r;
    return best;
  }

  /** An error code that may wrap after its underscores, its text unchanged (<wbr>). */
  function codeElement(tag, className, code) {
    const node = el(tag, className);
    code.split("_").forEach((part, index, parts) => {
      node.append(part + (index < parts.length - 1 ? "_" : ""));
      if (index < parts.length - 1) node.append(document.createElement("wbr"));
    });
    return node;
  }

  /** An image's error as shown: its code unless the status says it, its message unless
   * the code does. */
  function errorParts(image) {
    const { code, message } = image.error || {};
    const parts = [];
    if (code && code !== image.status) parts.push(code);
    if (message && message !== code) parts.push(message);
    return parts;
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
    thumb.addEventListener("load", () => {
      thumb.classList.add("loaded");
      placeholder.hidden = true; // its blur would show around a thumbnail of another shape
    });
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
    const status = tile.querySelector(".tile-status");
    status.textContent = image.status;
    // Said once: the duplicate badge, or the error code ("cancelled"), says it already.
    status.hidden = image.status === "duplicate" || image.error?.code === image.status;
    // The label replaces the tile's text for screen readers: it says all the text does.
    tile.setAttribute("aria-label", `${image.filename}: ${[image.status, ...errorParts(image)].join(", ")}`);
    const placeholder = tile.querySelector("img.placeholder");
    const thumb = tile.querySelector("img.thumb");
    if (image.placeholder && placeholder.dataset.hash !== image.placeholder) {
      const url = pm.thumbhash.placeholderDataUrl(image.placeholder);
      if (url) {
        placeholder.dataset.hash = image.placeholder;
        placeholder.src = url;
        placeholder.hidden = thumb.classList.contains("loaded");
      }
    }
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
      caption.append(codeElement("span", "error-code", image.error.code));
      if (image.error.message && image.error.message !== image.error.code) {
        caption.append(el("span", "error-message", image.error.message));
      }
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
    let tile = tileOf(image.image_id);
    if (!tile) {
      tile = buildTile(image);
      gallery.append(tile); // placed by placeTiles() once the batch's order is known
    }
    paintTile(tile, image);
  }

  const tileOf = (id) => document.querySelector(`#gallery [data-image-id="${CSS.escape(id)}"]`);

  /** Tiles in the batch's image order, whatever order their events came in. */
  function placeTiles() {
    const gallery = document.getElementById("gallery");
    const ordered = state.order.map(tileOf).filter(Boolean);
    const others = [...gallery.children].filter((tile) => !state.order.includes(tile.dataset.imageId));
    const wanted = [...ordered, ...others];
    if (wanted.every((tile, index) => gallery.children[index] === tile)) return;
    const focused = document.activeElement;
    gallery.append(...wanted); // moves them
    if (focused && gallery.contains(focused)) focused.focus({ preventScroll: true });
  }

  /** Show the gallery of `batchId` (a no-op if it is already shown). */
  async function open(batchId) {
    if (state.batchId === batchId && state.loading) return state.loading;
    if (state.batchId === batchId) return;
    state.batchId = batchId;
    state.batch = null;
    state.images.clear();
    state.order = [];
    state.reread = false;
    const gallery = document.getElementById("gallery");
    gallery.replaceChildren();
    gallery.dataset.batchId = batchId;
    document.getElementById("gallery-panel").hidden = false;
    document.getElementById("gallery-title").textContent =
      `Gallery of batch ${pm.batches.shortId(batchId)}`;
    document.getElementById("gallery-summary").textContent = "Loading…";
    const loading = (async () => {
      try {
        const batch = await pm.api.request(`/v1/batches/${batchId}`);
        if (state.batchId !== batchId) return;
        pm.batches.update(batch); // paints the gallery too
        pm.batches.syncStreams();
      } catch (error) {
        if (state.batchId !== batchId) return;
        if (error.code === "not_found") return pm.router.batchGone(batchId);
        pm.ui.showError(error);
        pm.router.galleryFailed(batchId);
      } finally {
        // Only our own: a newer open() may be pending by now.
        if (state.loading === loading) state.loading = null;
      }
    })();
    state.loading = loading;
    return loading;
  }

  function close() {
    state.batchId = null;
    state.batch = null;
    state.images.clear();
    state.order = [];
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
    if (images) {
      state.order = images.map((image) => image.image_id);
      for (const image of images) paintImage(image);
      placeTiles();
    }
    paintSummary();
  }

  /** The gallery's copy of the opened batch is finished, with every image final. */
  function isFinal() {
    const batch = state.batch;
    if (!batch || !batch.finished_at || state.images.size < batch.total) return false;
    return [...state.images.values()].every((image) => FINAL.has(image.status));
  }

  /**
   * `batchId` was seen finished (the listing, a closed stream). If it is the opened batch
   * and the gallery missed the end (its stream was down then, or stopped), read the batch
   * once more so the gallery converges instead of showing "processing" for ever.
   */
  async function seenFinished(batchId) {
    if (state.batchId !== batchId || state.reread) return;
    if (state.loading) await state.loading;
    if (state.batchId !== batchId || state.reread || isFinal()) return;
    state.reread = true;
    if (!(await reread(batchId))) state.reread = false; // try again at the next sighting
  }

  /** GET the opened batch again; a 404 closes the gallery (the batch is gone). True once
   * answered (found or gone), false when the request failed. */
  async function reread(batchId) {
    try {
      const batch = await pm.api.request(`/v1/batches/${batchId}`);
      if (state.batchId === batchId) pm.batches.update(batch);
    } catch (error) {
      if (state.batchId !== batchId) return true;
      if (error.code !== "not_found") return false;
      pm.router.batchGone(batchId);
    }
    return true;
  }

  function imageUpdated(batchId, image) {
    if (batchId !== state.batchId) return;
    paintImage(image);
    if (pm.detail.shownId() === image.image_id) pm.detail.show(state.batchId, image);
  }

  /** The preset catalogue arrived: thumbnails may now avoid cover crops. */
  function catalogueLoaded() {
    for (const image of state.images.values()) paintImage(image);
  }

  function tick() {
    if (state.batch && !state.batch.finished_at) paintSummary();
  }

  pm.gallery = {
    open, close, batchUpdated, imageUpdated, seenFinished, reread, catalogueLoaded, tick,
    formatBytes,
    codeElement, tileOf, errorParts,
    openedId: () => state.batchId,
    image: (id) => state.images.get(id),
    ready: () => state.loading || Promise.resolve(),
  };
})((window.pm = window.pm || {}));
