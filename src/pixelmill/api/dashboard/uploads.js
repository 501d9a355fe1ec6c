/* Uploads: files dropped anywhere on the page or picked, one POST /v1/batches at a time
 * (files dropped meanwhile wait their turn), with the upload's progress and outcome. */
"use strict";

(function (pm) {
  // From dashboard.js, which loads after this file (called only once the page runs).
  const notice = (...args) => pm.ui.notice(...args);
  const clearNotice = (kind) => pm.ui.clearNotice(kind);
  const errorText = (error) => pm.ui.errorText(error);
  const checked = (name) => pm.choices.checked(name);
  const sameSet = (a, b) => pm.choices.sameSet(a, b);
  const openBatch = (batchId, options) => pm.router.openBatch(batchId, options);

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
    if (!pm.choices.catalogue.presets.length) return notice("The preset catalogue is not loaded yet.", "choice");
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
    // Only what differs from the service's default: the batch then follows the pm.choices.catalogue.
    const allPresets = pm.choices.catalogue.presets.map((p) => p.name);
    if (!sameSet(presets, allPresets)) form.append("presets", presets.join(","));
    if (!sameSet(formats, pm.choices.catalogue.defaultFormats)) form.append("formats", formats.join(","));
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

  function init() {
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

  pm.uploads = { init };
})((window.pm = window.pm || {}));
