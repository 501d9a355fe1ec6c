/* The page: notices, the preset and format choice, uploads (drop or pick), the URL hash
 * (#/batches/<id>, #/batches/<id>/images/<image_id>) and start-up. */
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

  // --- uploads ----------------------------------------------------------------------------

  // Files dropped while an upload runs wait here, each with the choice made when dropped.
  // `hashAtDrop`: where the user was at the last drop (the gallery opens only if still there).
  const upload = { running: false, waiting: [], hashAtDrop: "" };

  const filesText = (n) => `${n} file${n === 1 ? "" : "s"}`;
  function waitingText() {
    const n = upload.waiting.length;
    return n ? ` (${n} more upload${n === 1 ? "" : "s"} waiting)` : "";
  }

  /** "2 files (a.jpg, b.jpg…)": which upload, by the names of its first files. */
  function uploadText(files) {
    const names = files.slice(0, 2).map((file) => file.name).join(", ");
    return `${filesText(files.length)} (${names}${files.length > 2 ? "…" : ""})`;
  }

  /** Take dropped or picked files: upload them now, or after the running upload. */
  function uploadFiles(files) {
    if (!files.length) return;
    const presets = checked("preset");
    const formats = checked("format");
    if (!catalogue.presets.length) return notice("The preset catalogue is not loaded yet.", "choice");
    if (!presets.length) return notice("Choose at least one preset.", "choice");
    if (!formats.length) return notice("Choose at least one format.", "choice");
    clearNotice("choice"); // an upload's failure stays until dismissed
    upload.hashAtDrop = location.hash;
    upload.waiting.push({ files, presets, formats });
    document.getElementById("file-input").value = "";
    if (upload.running) {
      const status = document.getElementById("upload-status");
      status.textContent = status.textContent.replace(/ \(\d+ more uploads? waiting\)$/, "") + waitingText();
      return;
    }
    drainUploads();
  }

  /** Upload what waits, one at a time; then say how the run went, once. */
  async function drainUploads() {
    upload.running = true;
    document.body.classList.add("uploading");
    const run = { accepted: [], failed: [] };
    while (upload.waiting.length) {
      const next = upload.waiting.shift();
      try {
        run.accepted.push({ files: next.files, batchId: await uploadOnce(next) });
      } catch (error) {
        run.failed.push({ files: next.files, error });
        notice(failureText(run, false), "upload", error.code || "error");
      }
    }
    upload.running = false;
    document.body.classList.remove("uploading");
    if (run.failed.length) notice(failureText(run, true), "upload", run.failed.at(-1).error.code || "error");
    const last = run.accepted.at(-1);
    if (last) followUpload(last);
  }

  /** Every failure of the run so far, named by its files; once the run is over and it had
   * more than one upload, headed by how many were accepted ("2 of 3 uploads accepted; the
   * upload of 1 file (c.jpg) failed: file_too_large: …"). */
  function failureText(run, finished) {
    const total = run.accepted.length + run.failed.length;
    const failures = run.failed
      .map(({ files, error }) => `The upload of ${uploadText(files)} failed: ${errorText(error)}`)
      .join(" ");
    if (!finished || total === 1) return failures;
    return `${run.accepted.length} of ${total} uploads accepted; t${failures.slice(1)}`;
  }

  /** The user is still where they dropped the files (no other batch or image opened, the
   * focus not taken elsewhere): the new gallery may take them there. */
  function stayedSinceDrop() {
    const focused = document.activeElement;
    const idle =
      !focused ||
      focused === document.body ||
      focused.id === "file-input" ||
      document.getElementById("dropzone").contains(focused);
    return idle && location.hash === upload.hashAtDrop;
  }

  /** The run's last accepted batch: open its gallery, or offer to when the user moved on. */
  function followUpload({ files, batchId }) {
    const status = document.getElementById("upload-status");
    const text = `Uploaded ${filesText(files.length)}: batch ${pm.batches.shortId(batchId)}`;
    if (stayedSinceDrop()) {
      status.textContent = `${text}.`;
      openBatch(batchId, { focus: true });
      return;
    }
    const open = pm.batches.el("button", "inline-button", "open");
    open.type = "button";
    open.setAttribute("aria-label", `Open gallery of batch ${pm.batches.shortId(batchId)}`);
    open.addEventListener("click", () => openBatch(batchId, { focus: true }));
    status.replaceChildren(`${text} (`, open, ")");
  }

  /** One POST /v1/batches: the new batch's id; throws when it was refused or failed. */
  async function uploadOnce({ files, presets, formats }) {
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    // Only what differs from the service's default: the batch then follows the catalogue.
    const allPresets = catalogue.presets.map((p) => p.name);
    if (!sameSet(presets, allPresets)) form.append("presets", presets.join(","));
    if (!sameSet(formats, catalogue.defaultFormats)) form.append("formats", formats.join(","));
    const bar = document.getElementById("upload-progress");
    const status = document.getElementById("upload-status");
    const what = filesText(files.length);
    bar.value = 0;
    bar.hidden = false;
    status.textContent = `Uploading ${what}…${waitingText()}`;
    try {
      const accepted = await pm.api.upload("/v1/batches", form, (fraction) => {
        bar.value = fraction;
        status.textContent = `Uploading ${what}: ${Math.round(fraction * 100)}%${waitingText()}`;
      });
      status.textContent = `Uploaded ${what}: batch ${pm.batches.shortId(accepted.batch_id)}.${waitingText()}`;
      await pm.batches.showNewest();
      return accepted.batch_id;
    } catch (error) {
      status.textContent = `The upload of ${what} failed.${waitingText()}`;
      throw error;
    } finally {
      bar.hidden = true;
    }
  }

  function initDropping() {
    const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
    document.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      document.body.classList.add("dragging");
    });
    document.addEventListener("dragleave", (event) => {
      if (event.relatedTarget === null) document.body.classList.remove("dragging");
    });
    document.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      document.body.classList.remove("dragging");
      uploadFiles([...event.dataTransfer.files]);
    });
    document.getElementById("file-input").addEventListener("change", (event) => {
      uploadFiles([...event.target.files]);
    });
  }

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

  pm.ui = { notice, requestSucceeded, showError, presetFit };
  pm.router = { openBatch, openImage, closeBatch, batchGone, galleryFailed, detailClosed };

  function init() {
    document.getElementById("gallery-close").addEventListener("click", closeBatch);
    initNotice();
    trackStatusBar();
    window.addEventListener("hashchange", applyHash);
    window.addEventListener("unhandledrejection", (event) => {
      if (event.reason && event.reason.name === "AbortError") event.preventDefault();
    });
    initDropping();
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
