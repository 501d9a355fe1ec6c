/* An image's detail: source, timings and every rendition of its manifest (or its error),
 * in #detail, a modal <dialog> (Escape and Close close it; focus goes back to the tile). */
"use strict";

(function (pm) {
  const STAGES = ["read", "decode", "resize", "encode", "total"];
  const state = { imageId: null, batchId: null, request: 0 };
  const el = (...args) => pm.batches.el(...args);

  function definitionList(className, pairs) {
    const list = el("dl", className);
    for (const [term, value] of pairs) list.append(el("dt", "", term), el("dd", "", value));
    return list;
  }

  function sourceSection(source) {
    const section = el("section", "detail-source");
    section.append(el("h3", "", "Source"));
    section.append(
      definitionList("facts", [
        ["Format", source.format],
        ["Size", `${source.width} x ${source.height}`],
        ["Bytes", pm.gallery.formatBytes(source.bytes)],
        ["Orientation", source.orientation == null ? "none" : String(source.orientation)],
      ]),
    );
    return section;
  }

  /** This upload's timings; a duplicate has none of its own (`timings_ms` is null), so
   * the manifest's are shown, headed as what they are: those of the first render. */
  function timingsSection(timings, firstRender) {
    const section = el("section", "detail-timings");
    section.append(el("h3", "", firstRender ? "Timings of the first render of these bytes" : "Timings"));
    if (firstRender) {
      section.append(el("p", "note", "This upload was a duplicate: nothing was rendered for it."));
    }
    const pairs = STAGES.filter((stage) => timings && timings[stage] != null).map((stage) => [
      stage,
      `${Number(timings[stage]).toFixed(1)} ms`,
    ]);
    if (pairs.length) section.append(definitionList("facts", pairs));
    else section.append(el("p", "", "No timings (the image was not rendered by this upload)."));
    return section;
  }

  function renditionsSection(renditions) {
    const section = el("section", "detail-renditions");
    section.append(el("h3", "", "Renditions"));
    const list = el("ul", "renditions");
    for (const r of renditions) {
      const row = el("li", "rendition");
      const link = el("a", "rendition-link", r.name);
      link.setAttribute("aria-label", `${r.name} (${r.format})`);
      link.href = r.path;
      link.target = "_blank";
      link.rel = "noopener";
      row.append(
        link,
        el("span", "rendition-format", r.format),
        el("span", "rendition-size", `${r.width}x${r.height}`),
        el("span", "rendition-bytes", pm.gallery.formatBytes(r.bytes)),
      );
      list.append(row);
    }
    section.append(list);
    return section;
  }

  /** The error's code (unless the status above says it already, as "cancelled" does) and
   * its message (unless it only repeats the code). */
  function errorSection(error, status) {
    const section = el("section", "detail-error");
    const ownCode = error.code && error.code !== status;
    section.append(el("h3", "", ownCode ? "Error" : "Why"));
    if (ownCode) section.append(pm.gallery.codeElement("p", "error-code", error.code));
    if (error.message && error.message !== error.code) section.append(el("p", "error-message", error.message));
    return section;
  }

  /** Fill and open the dialog for `image` (refreshed when its record changes). */
  async function show(batchId, image) {
    const dialog = document.getElementById("detail");
    const body = document.getElementById("detail-body");
    const request = ++state.request;
    state.imageId = image.image_id;
    state.batchId = batchId;
    document.getElementById("detail-title").textContent = image.filename;
    const status = el("p", "detail-status");
    status.append("Status: ", el("span", "pill", image.status));
    const parts = [status];
    if (image.error) parts.push(errorSection(image.error, image.status));
    else if (image.sha256 && (image.status === "done" || image.status === "duplicate")) {
      parts.push(el("p", "loading", "Loading the manifest…"));
    }
    body.replaceChildren(...parts);
    if (!dialog.open) dialog.showModal();
    if (parts.length < 2 || image.error) return;
    try {
      const manifest = await pm.api.request(`/v1/images/${image.sha256}`);
      if (request !== state.request) return;
      body.replaceChildren(
        status,
        sourceSection(manifest.source),
        timingsSection(
          image.timings_ms || manifest.timings_ms,
          !image.timings_ms && image.status === "duplicate",
        ),
        renditionsSection(manifest.renditions),
      );
    } catch (error) {
      if (request !== state.request) return;
      body.replaceChildren(status, errorSection({ code: error.code, message: error.message }));
    }
  }

  function hide() {
    const dialog = document.getElementById("detail");
    if (dialog.open) dialog.close();
  }

  function init() {
    const dialog = document.getElementById("detail");
    document.getElementById("detail-close").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      const { imageId, batchId } = state;
      state.imageId = null;
      state.request++;
      if (imageId === null) return;
      pm.gallery.tileOf(imageId)?.focus();
      pm.router.detailClosed(batchId, imageId);
    });
  }

  pm.detail = { init, show, hide, shownId: () => state.imageId };
})((window.pm = window.pm || {}));
