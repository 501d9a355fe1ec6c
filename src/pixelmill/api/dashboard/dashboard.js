/* The page: notices, the preset and format choice, the URL hash (#/batches/<id>,
 * #/batches/<id>/images/<image_id>) and start-up. Uploads are in uploads.js. */
"use strict";

(function (pm) {
  const catalogue = { presets: [], defaultFormats: [] }; // presets as GET /v1/presets lists them

  // --- notices ----------------------------------------------------------------------------

  // What the shown notice is about: `kind` names what failed, `code` the error. A later
  // success of a read of that kind clears it, and network trouble clears once any read
  // succeeds, except for the catalogue's (cleared only when it loads) and an upload's (kept
  // until dismissed: an upload is not a background read, and it is not retried).
  const shown = { kind: null, code: null };
  const SERVICE_DOWN = new Set(["network", "unavailable", "http_502", "http_503", "http_504"]);
  const OWN_SUCCESS_ONLY = new Set(["presets", "upload"]);
  const BACKGROUND = new Set(["listing", "presets"]); // reads that never replace an upload's
  let focusBeforeNotice = null; // what had the focus before it went into the notice

  function notice(text, kind = null, code = null) {
    if (text && shown.kind === "upload" && BACKGROUND.has(kind)) return; // read it first
    const box = document.getElementById("notice");
    document.getElementById("notice-text").textContent = text;
    box.hidden = !text;
    shown.kind = text ? kind : null;
    shown.code = text ? code : null;
  }

  /** Take down the notice if it is about `kind`. */
  function clearNotice(kind) {
    if (shown.kind === kind) notice("");
  }

  /** A request of `kind` succeeded: its old failure, and any "service down", are over. */
  function requestSucceeded(kind) {
    if (shown.kind === kind) notice("");
    else if (SERVICE_DOWN.has(shown.code) && !OWN_SUCCESS_ONLY.has(shown.kind)) notice("");
  }

  /** An error as the user sees it: the API's code and message, never a raw dump. */
  function errorText(error) {
    if (error instanceof pm.api.ApiError) return error.describe();
    return `Something went wrong: ${error.message || error}`;
  }

  function showError(error, kind = null) {
    if (error && error.name === "AbortError") return;
    notice(errorText(error), kind, error instanceof pm.api.ApiError ? error.code : "error");
  }

  /** Dismiss: the focus goes back where it was before it entered the notice (never to the
   * top of the page), and the page does not scroll. */
  function initNotice() {
    const box = document.getElementById("notice");
    box.addEventListener("focusin", (event) => {
      if (!box.contains(event.relatedTarget)) focusBeforeNotice = event.relatedTarget;
    });
    document.getElementById("notice-dismiss").addEventListener("click", () => {
      const hadFocus = box.contains(document.activeElement);
      const back = focusBeforeNotice;
      focusBeforeNotice = null;
      notice("");
      if (!hadFocus) return;
      const shownStill = back && back.isConnected && back.getClientRects().length > 0;
      (shownStill ? back : document.getElementById("file-input")).focus({ preventScroll: true });
    });
  }

  /** The status bar is sticky while it shows something: keep focused controls clear of it
   * (scroll-padding-top follows its height). */
  function trackStatusBar() {
    const bar = document.querySelector(".status-bar");
    const sync = () => {
      const height = getComputedStyle(bar).position === "sticky" ? bar.offsetHeight : 0;
      document.documentElement.style.setProperty("--status-bar-height", `${height}px`);
    };
    new ResizeObserver(sync).observe(bar);
    sync();
  }

  // --- presets and formats ----------------------------------------------------------------

  function checkbox(name, value, label, checked) {
    const wrapper = pm.batches.el("label", "check");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.name = name;
    input.value = value;
    input.checked = checked;
    wrapper.append(input, " ", pm.batches.el("span", "", label));
    return wrapper;
  }

  const checked = (name) =>
    [...document.querySelectorAll(`input[type=checkbox][name=${name}]:checked`)].map((i) => i.value);
  const sameSet = (a, b) => a.length === b.length && a.every((x) => b.includes(x));

  /** A preset limited to formats of its own (the catalogue lists the defaults otherwise). */
  const ownFormats = (preset) =>
    sameSet(preset.formats, catalogue.defaultFormats) ? null : preset.formats;

  /** "social (1200x630, cover, attention; webp only)": everything the choice depends on. */
  function presetLabel(preset) {
    const how = [`${preset.width}x${preset.height}`, preset.fit];
    if (preset.gravity) how.push(preset.gravity);
    const own = ownFormats(preset);
    return `${preset.name} (${how.join(", ")}${own ? `; ${own.join(", ")} only` : ""})`;
  }

  /** Say, before the upload, which checked preset the checked formats leave empty. */
  function updateChoiceHint() {
    const hint = document.getElementById("choice-hint");
    const formats = checked("format");
    const presets = checked("preset");
    const empty = catalogue.presets.filter((p) => {
      const own = ownFormats(p);
      return presets.includes(p.name) && own && formats.length && !own.some((f) => formats.includes(f));
    });
    hint.textContent = empty
      .map((p) => `${p.name} renders nothing with these formats: it makes only ${ownFormats(p).join(", ")}.`)
      .join(" ");
    hint.hidden = !empty.length;
  }

  const CATALOGUE_RETRY_MAX_MS = 30000;
  let catalogueRetryMs = 2000;

  async function loadChoices() {
    const presets = document.getElementById("choice-presets");
    const formats = document.getElementById("choice-formats");
    try {
      const answer = await pm.api.request("/v1/presets");
      catalogue.presets = answer.presets;
      catalogue.defaultFormats = answer.default_formats;
      presets.querySelector(".loading")?.remove();
      formats.querySelector(".loading")?.remove();
      for (const p of answer.presets) presets.append(checkbox("preset", p.name, presetLabel(p), true));
      for (const f of answer.formats) {
        formats.append(checkbox("format", f, f, answer.default_formats.includes(f)));
      }
      for (const box of [presets, formats]) box.addEventListener("change", updateChoiceHint);
      updateChoiceHint();
      requestSucceeded("presets");
      clearNotice("choice"); // "not loaded yet": it is now
      pm.gallery.catalogueLoaded();
    } catch (error) {
      // Nothing can be uploaded without it: ask again, less and less often.
      showError(error, "presets");
      for (const box of [presets, formats]) {
        const loading = box.querySelector(".loading");
        if (loading) loading.textContent = "Not loaded yet: trying again…";
      }
      setTimeout(loadChoices, catalogueRetryMs);
      catalogueRetryMs = Math.min(catalogueRetryMs * 2, CATALOGUE_RETRY_MAX_MS);
    }
  }

  /** How a preset fits its box ("inside", "cover"), or null before the catalogue. */
  const presetFit = (name) => catalogue.presets.find((p) => p.name === name)?.fit || null;

  // --- the URL hash -----------------------------------------------------------------------

  const HASH = /^#\/batches\/([0-9a-f]{32})(?:\/images\/([0-9a-f]{32}))?$/;
  let pushedDetail = false; // the detail's history entry is ours: closing goes back
  let hashGeneration = 0; // an applyHash() whose URL has since changed stops after its await
  let focusGallery = false; // the user asked for the gallery: take them there

  function parseHash() {
    const match = HASH.exec(location.hash);
    return match ? { batchId: match[1], imageId: match[2] || null } : { batchId: null, imageId: null };
  }

  /** Scroll the gallery into view and move focus to its heading (keyboard, screen reader). */
  function takeToGallery() {
    const heading = document.getElementById("gallery-title");
    heading.scrollIntoView({ block: "start" });
    heading.focus({ preventScroll: true });
  }

  async function applyHash() {
    const generation = ++hashGeneration;
    const hash = location.hash;
    const { batchId, imageId } = parseHash();
    clearNotice("hash"); // about a link the user has left
    clearNotice("gone");
    if (!batchId) {
      pm.detail.hide();
      pm.gallery.close();
      return;
    }
    if (pm.gallery.openedId() !== batchId) {
      pm.detail.hide();
      pm.gallery.open(batchId);
    }
    if (focusGallery) {
      focusGallery = false;
      takeToGallery();
    }
    await pm.gallery.ready();
    if (generation !== hashGeneration || location.hash !== hash) return; // the user moved on
    if (pm.gallery.openedId() !== batchId) return; // it failed to open (said already)
    if (!imageId) return pm.detail.hide();
    const image = pm.gallery.image(imageId);
    if (image) pm.detail.show(batchId, image);
    else {
      notice(`No image ${imageId.slice(0, 8)} in this batch (not_found)`, "hash");
      history.replaceState(null, "", `#/batches/${batchId}`);
    }
  }

  function openBatch(batchId, { focus = false } = {}) {
    pushedDetail = false;
    const hash = `#/batches/${batchId}`;
    if (location.hash === hash) {
      if (focus) takeToGallery(); // no hashchange: already there
      return;
    }
    focusGallery = focus;
    location.hash = hash;
  }

  function openImage(batchId, imageId) {
    pushedDetail = true;
    location.hash = `#/batches/${batchId}/images/${imageId}`;
  }

  /** Focus where the gallery was opened from: its row's button, else the list heading. */
  function focusBatchRow(batchId) {
    const row = batchId && document.querySelector(`#batches [data-batch-id="${CSS.escape(batchId)}"]`);
    const target = row?.querySelector(".batch-open") || document.getElementById("batches-title");
    target.focus();
  }

  function closeBatch() {
    const batchId = pm.gallery.openedId();
    pushedDetail = false;
    if (location.hash) history.pushState(null, "", location.pathname + location.search);
    applyHash();
    focusBatchRow(batchId);
  }

  /** Leave the opened batch's URL without a history entry (Back must leave the page, not
   * return to a gallery that cannot be shown); true if the focus was in the gallery. */
  function leaveBatch() {
    const hadFocus = document.getElementById("gallery-panel").contains(document.activeElement);
    pushedDetail = false;
    history.replaceState(null, "", location.pathname + location.search);
    applyHash();
    return hadFocus;
  }

  /** The opened batch no longer exists (deleted, expired): close it and say so. */
  function batchGone(batchId) {
    if (pm.gallery.openedId() !== batchId) return;
    const hadFocus = leaveBatch();
    notice(`The batch ${pm.batches.shortId(batchId)} is gone (deleted or expired).`, "gone");
    if (hadFocus || document.activeElement === document.body) focusBatchRow(null);
    pm.batches.refresh();
  }

  /** The opened batch could not be read (said in a notice): close its gallery; the focus
   * moves, to the batch's row, only if it was in the gallery. */
  function galleryFailed(batchId) {
    if (pm.gallery.openedId() !== batchId) return;
    if (leaveBatch()) focusBatchRow(batchId);
  }

  /** The dialog was closed (Escape or Close): leave its URL. */
  function detailClosed(batchId, imageId) {
    const { imageId: shown } = parseHash();
    if (shown !== imageId) return; // closed because the URL changed already
    if (pushedDetail) history.back();
    else history.replaceState(null, "", `#/batches/${batchId}`);
    pushedDetail = false;
  }

  pm.ui = { notice, clearNotice, requestSucceeded, showError, errorText, presetFit };
  pm.choices = { catalogue, checked, sameSet };
  pm.router = { openBatch, openImage, closeBatch, batchGone, galleryFailed, detailClosed };

  function init() {
    document.getElementById("gallery-close").addEventListener("click", closeBatch);
    initNotice();
    trackStatusBar();
    window.addEventListener("hashchange", applyHash);
    window.addEventListener("unhandledrejection", (event) => {
      if (event.reason && event.reason.name === "AbortError") event.preventDefault();
    });
    pm.uploads.init();
    pm.detail.init();
    // The key dialog cannot be dismissed without a key: nothing works without one.
    document.getElementById("key-dialog").addEventListener("cancel", (e) => e.preventDefault());
    loadChoices();
    pm.batches.init();
    applyHash();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})((window.pm = window.pm || {}));
