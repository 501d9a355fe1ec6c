/* The page: notices, the preset and format choice, uploads (drop or pick), the URL hash
 * (#/batches/<id>, #/batches/<id>/images/<image_id>) and start-up. */
"use strict";

(function (pm) {
  const catalogue = { presets: [], defaultFormats: [] };

  // --- notices ----------------------------------------------------------------------------

  function notice(text) {
    const box = document.getElementById("notice");
    box.textContent = text;
    box.hidden = !text;
  }

  /** An error as the user sees it: the API's code and message, never a raw dump. */
  function showError(error) {
    if (error && error.name === "AbortError") return;
    notice(error instanceof pm.api.ApiError ? error.describe() : `error: ${error.message || error}`);
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

  async function loadChoices() {
    const presets = document.getElementById("choice-presets");
    const formats = document.getElementById("choice-formats");
    try {
      const answer = await pm.api.request("/v1/presets");
      catalogue.presets = answer.presets.map((p) => p.name);
      catalogue.defaultFormats = answer.default_formats;
      presets.querySelector(".loading")?.remove();
      formats.querySelector(".loading")?.remove();
      for (const p of answer.presets) {
        presets.append(checkbox("preset", p.name, `${p.name} (${p.width}x${p.height}, ${p.fit})`, true));
      }
      for (const f of answer.formats) {
        formats.append(checkbox("format", f, f, answer.default_formats.includes(f)));
      }
    } catch (error) {
      showError(error);
    }
  }

  const checked = (name) =>
    [...document.querySelectorAll(`input[type=checkbox][name=${name}]:checked`)].map((i) => i.value);
  const sameSet = (a, b) => a.length === b.length && a.every((x) => b.includes(x));

  // --- uploads ----------------------------------------------------------------------------

  let uploading = false;

  async function uploadFiles(files) {
    if (!files.length) return;
    if (uploading) return notice("An upload is under way: drop the next files when it is done.");
    const presets = checked("preset");
    const formats = checked("format");
    if (!catalogue.presets.length) return notice("The preset catalogue is not loaded yet.");
    if (!presets.length) return notice("Choose at least one preset.");
    if (!formats.length) return notice("Choose at least one format.");
    notice("");
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    // Only what differs from the service's default: the batch then follows the catalogue.
    if (!sameSet(presets, catalogue.presets)) form.append("presets", presets.join(","));
    if (!sameSet(formats, catalogue.defaultFormats)) form.append("formats", formats.join(","));
    const bar = document.getElementById("upload-progress");
    const status = document.getElementById("upload-status");
    const what = `${files.length} file${files.length === 1 ? "" : "s"}`;
    uploading = true;
    bar.value = 0;
    bar.hidden = false;
    status.textContent = `Uploading ${what}…`;
    try {
      const accepted = await pm.api.upload("/v1/batches", form, (fraction) => {
        bar.value = fraction;
        status.textContent = `Uploading ${what}: ${Math.round(fraction * 100)}%`;
      });
      status.textContent = `Uploaded ${what}: batch ${pm.batches.shortId(accepted.batch_id)}.`;
      await pm.batches.showNewest();
      openBatch(accepted.batch_id);
    } catch (error) {
      status.textContent = `The upload of ${what} failed.`;
      showError(error);
    } finally {
      uploading = false;
      bar.hidden = true;
      document.getElementById("file-input").value = "";
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

  function parseHash() {
    const match = HASH.exec(location.hash);
    return match ? { batchId: match[1], imageId: match[2] || null } : { batchId: null, imageId: null };
  }

  async function applyHash() {
    const { batchId, imageId } = parseHash();
    if (!batchId) {
      pm.detail.hide();
      pm.gallery.close();
      return;
    }
    if (pm.gallery.openedId() !== batchId) {
      pm.detail.hide();
      pm.gallery.open(batchId);
    }
    await pm.gallery.ready();
    if (!imageId) return pm.detail.hide();
    const image = pm.gallery.image(imageId);
    if (image) pm.detail.show(batchId, image);
    else {
      notice(`not_found: no image ${imageId.slice(0, 8)} in this batch`);
      history.replaceState(null, "", `#/batches/${batchId}`);
    }
  }

  function openBatch(batchId) {
    pushedDetail = false;
    location.hash = `#/batches/${batchId}`;
  }

  function openImage(batchId, imageId) {
    pushedDetail = true;
    location.hash = `#/batches/${batchId}/images/${imageId}`;
  }

  function closeBatch() {
    pushedDetail = false;
    if (location.hash) history.pushState(null, "", location.pathname + location.search);
    applyHash();
  }

  /** The dialog was closed (Escape or Close): leave its URL. */
  function detailClosed(batchId, imageId) {
    const { imageId: shown } = parseHash();
    if (shown !== imageId) return; // closed because the URL changed already
    if (pushedDetail) history.back();
    else history.replaceState(null, "", `#/batches/${batchId}`);
    pushedDetail = false;
  }

  pm.ui = { notice, showError };
  pm.router = { openBatch, openImage, closeBatch, detailClosed };

  function init() {
    document.getElementById("gallery-close").addEventListener("click", closeBatch);
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
