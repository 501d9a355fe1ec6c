/* The batch list: pages of 10, newest first; live progress for up to 3 running batches
 * through their event streams, and a re-read of the page for the rest. */
"use strict";

(function (pm) {
  const PAGE_SIZE = 10;
  // Browsers open ~6 connections per host over HTTP/1.1: leave room for the page's requests.
  const MAX_STREAMS = 3;
  const POLL_RUNNING_MS = 5000;
  const POLL_IDLE_MS = 15000;
  const CANCELLABLE = new Set(["queued", "processing"]);

  const state = {
    cursors: [null], // the cursor of each page up to the current one (null: the first)
    nextCursor: null,
    page: [], // batches of the current page, newest first
    pageCursor: undefined, // the cursor `page` was read with
    known: new Map(), // batch_id -> the latest status seen (listing, events, gallery)
    streams: new Map(), // batch_id -> {stop}
    ended: new Set(), // batches whose stream said done (or 204, 404): not reopened
    timer: null,
    generation: 0, // ignores answers to a page the user has since left
    paging: false, // a page asked for with Newer/Older is loading: further clicks wait
  };

  const isRunning = (batch) => batch && !batch.finished_at;
  const shortId = (id) => id.slice(0, 8);

  function elapsedText(batch) {
    const start = Date.parse(batch.created_at);
    const end = batch.finished_at ? Date.parse(batch.finished_at) : Date.now();
    if (Number.isNaN(start) || Number.isNaN(end)) return "";
    const seconds = Math.max(0, Math.floor((end - start) / 1000));
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (h) return `${h} h ${pad(m)} min ${pad(s)} s`;
    if (m) return `${m} min ${pad(s)} s`;
    return `${s} s`;
  }

  function countsText(b) {
    const done = b.completed - b.duplicates;
    return (
      `${done} done, ${b.duplicates} duplicate${b.duplicates === 1 ? "" : "s"}, ` +
      `${b.failed} failed, ${b.cancelled} cancelled, ${b.pending} pending of ${b.total}`
    );
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function buildRow(batch) {
    const row = el("li", "batch");
    row.dataset.batchId = batch.batch_id;
    const head = el("div", "batch-head");
    head.append(
      el("span", "batch-id", shortId(batch.batch_id)),
      el("span", "batch-status pill"),
      el("span", "batch-failed pill"),
    );
    const created = el("time", "batch-created");
    head.append(created);
    const bar = el("progress", "batch-progress");
    bar.max = 1;
    bar.setAttribute("aria-label", `Progress of batch ${shortId(batch.batch_id)}`);
    const actions = el("div", "batch-actions");
    const open = el("button", "button batch-open", "Open gallery");
    open.type = "button";
    open.setAttribute("aria-label", `Open gallery of batch ${shortId(batch.batch_id)}`);
    open.addEventListener("click", () => pm.router.openBatch(batch.batch_id, { focus: true }));
    actions.append(open);
    row.append(head, bar, el("p", "batch-counts"), el("p", "batch-elapsed"), actions);
    return row;
  }

  /** What the bar's colour says (the status is written out too): a clean run, one with
   * failures, a cancelled one. */
  function outcomeOf(batch) {
    if (batch.status === "cancelled") return "cancelled";
    return batch.failed ? "failures" : "clean";
  }

  function paintRow(row, batch) {
    row.dataset.status = batch.status;
    row.dataset.outcome = outcomeOf(batch);
    const failed = row.querySelector(".batch-failed");
    failed.textContent = batch.failed ? `${batch.failed} failed` : "";
    failed.hidden = !batch.failed;
    row.classList.toggle("opened", pm.gallery.openedId() === batch.batch_id);
    row.querySelector(".batch-status").textContent = batch.status;
    const created = row.querySelector(".batch-created");
    created.dateTime = batch.created_at;
    created.textContent = new Date(batch.created_at).toLocaleString();
    row.querySelector(".batch-progress").value = batch.progress;
    row.querySelector(".batch-counts").textContent = countsText(batch);
    row.querySelector(".batch-elapsed").textContent = "Elapsed " + elapsedText(batch);
    const actions = row.querySelector(".batch-actions");
    let cancel = actions.querySelector(".batch-cancel");
    if (CANCELLABLE.has(batch.status) && !cancel) {
      cancel = el("button", "button batch-cancel", "Cancel");
      cancel.type = "button";
      cancel.setAttribute("aria-label", `Cancel batch ${shortId(batch.batch_id)}`);
      cancel.addEventListener("click", () => cancelBatch(batch.batch_id, cancel));
      actions.append(cancel);
    } else if (!CANCELLABLE.has(batch.status) && cancel) {
      cancel.remove();
    }
  }

  async function cancelBatch(batchId, button) {
    button.disabled = true;
    try {
      update(await pm.api.request(`/v1/batches/${batchId}/cancel`, { method: "POST" }));
      // The Cancel button is gone (or disabled): keep the keyboard on this row.
      if (document.activeElement === document.body || document.activeElement === button) {
        const open = document.querySelector(
          `#batches [data-batch-id="${CSS.escape(batchId)}"] .batch-open`,
        );
        if (open) open.focus();
        else focusListHeading();
      }
    } catch (error) {
      button.disabled = false;
      pm.ui.showError(error);
    }
  }

  /** A newer status of a batch (from any source): the row, the gallery, the streams. */
  function update(batch) {
    const seen = state.known.get(batch.batch_id);
    state.known.set(batch.batch_id, { ...seen, ...batch });
    const row = document.querySelector(`#batches [data-batch-id="${CSS.escape(batch.batch_id)}"]`);
    if (row) paintRow(row, state.known.get(batch.batch_id));
    pm.gallery.batchUpdated(batch);
  }

  function render() {
    const list = document.getElementById("batches");
    const rows = new Map([...list.children].map((row) => [row.dataset.batchId, row]));
    const wanted = state.page.map((batch) => {
      const row = rows.get(batch.batch_id) || buildRow(batch);
      paintRow(row, state.known.get(batch.batch_id) || batch);
      return row;
    });
    // Rows that stay are not re-inserted: moving a node would take the keyboard focus.
    for (const row of [...list.children]) if (!wanted.includes(row)) row.remove();
    wanted.forEach((row, index) => {
      if (list.children[index] !== row) list.insertBefore(row, list.children[index] || null);
    });
    document.getElementById("batches-empty").hidden = wanted.length > 0;
    paintPager();
  }

  function focusListHeading() {
    document.getElementById("batches-title").focus();
  }

  /** Newer and Older: disabled at the ends, and both while a page loads. */
  function paintPager() {
    const newer = document.getElementById("newer");
    const older = document.getElementById("older");
    newer.disabled = state.paging || state.cursors.length <= 1;
    older.disabled = state.paging || !state.nextCursor;
    const focused = document.activeElement;
    if (!state.paging && (focused === newer || focused === older) && focused.disabled) {
      focusPager(focused);
    }
  }

  /** Focus `button`, or when it is disabled the other pager button, or the list heading
   * (never <body>, where a keyboard user would start over). */
  function focusPager(button) {
    const other = document.getElementById(button.id === "newer" ? "older" : "newer");
    if (!button.disabled) button.focus();
    else if (!other.disabled) other.focus();
    else focusListHeading();
  }

  /** Go one page newer (-1) or older (+1); clicks while a page loads are ignored. */
  async function turnPage(direction, button) {
    if (state.paging) return;
    const before = [...state.cursors];
    if (direction > 0 && state.nextCursor) state.cursors.push(state.nextCursor);
    else if (direction < 0 && state.cursors.length > 1) state.cursors.pop();
    else return;
    const hadFocus = document.activeElement === button;
    state.paging = true;
    paintPager();
    const shown = await refresh();
    state.paging = false;
    if (shown === false) state.cursors = before; // it failed: still on the page shown
    paintPager();
    if (hadFocus || document.activeElement === document.body) focusPager(button);
  }

  /** Re-read the current page, then plan the next read and the streams: true once the
   * page is shown, false when the read failed, null when a newer read took over. */
  async function refresh() {
    const generation = ++state.generation;
    clearTimeout(state.timer);
    const cursor = state.cursors[state.cursors.length - 1];
    let query = `limit=${PAGE_SIZE}`;
    if (cursor) query += `&cursor=${encodeURIComponent(cursor)}`;
    try {
      const listing = await pm.api.request(`/v1/batches?${query}`);
      if (generation !== state.generation) return null;
      // The opened batch left the page it was on: deleted or expired? Its GET will say.
      const opened = pm.gallery.openedId();
      const wasShown = state.pageCursor === cursor && state.page.some((b) => b.batch_id === opened);
      if (wasShown && !listing.batches.some((b) => b.batch_id === opened)) pm.gallery.reread(opened);
      state.pageCursor = cursor;
      state.page = listing.batches;
      state.nextCursor = listing.next_cursor;
      for (const batch of listing.batches) {
        const seen = state.known.get(batch.batch_id);
        // An event may be newer than the listing: keep the further progress.
        if (!seen || !(seen.finished_at && !batch.finished_at)) {
          state.known.set(batch.batch_id, { ...seen, ...batch });
        }
        if (batch.finished_at) pm.gallery.seenFinished(batch.batch_id);
      }
      pm.ui.requestSucceeded("listing");
      render();
      syncStreams();
      schedule();
      return true;
    } catch (error) {
      if (generation !== state.generation) return null;
      pm.ui.showError(error, "listing");
      schedule();
      return false;
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    if (document.hidden) return; // resumed by visibilitychange
    const running = state.page.some((b) => isRunning(state.known.get(b.batch_id) || b));
    state.timer = setTimeout(refresh, running ? POLL_RUNNING_MS : POLL_IDLE_MS);
  }

  /** Keep streams open for the opened batch first, then the newest running ones. */
  function syncStreams() {
    const candidates = [pm.gallery.openedId(), ...state.page.map((b) => b.batch_id)];
    const wanted = [];
    for (const id of candidates) {
      if (!id || wanted.includes(id) || state.ended.has(id)) continue;
      if (!isRunning(state.known.get(id))) continue;
      if (wanted.length < MAX_STREAMS) wanted.push(id);
    }
    for (const [id, stream] of state.streams) {
      if (!wanted.includes(id)) {
        stream.stop();
        state.streams.delete(id);
      }
    }
    for (const id of wanted) {
      if (!state.streams.has(id)) state.streams.set(id, openStream(id));
    }
  }

  function openStream(batchId) {
    const stream = pm.api.followEvents(batchId, {
      onEvent(type, data) {
        if (type === "image") pm.gallery.imageUpdated(batchId, data);
        else if (type === "progress" || type === "done") update(data);
        if (type === "done" || type === "error") state.ended.add(batchId);
        if (type === "error" && data && data.code === "not_found") pm.router.batchGone(batchId);
      },
      onGone() {
        state.ended.add(batchId);
        pm.router.batchGone(batchId);
      },
      onClose() {
        // The gallery may have missed the end (a stream down at the time): re-read it.
        pm.gallery.seenFinished(batchId);
        if (state.streams.get(batchId) !== stream) return; // stopped on purpose
        state.streams.delete(batchId);
        state.ended.add(batchId);
        refresh(); // the final counts, and another batch may now get a stream
      },
    });
    return stream;
  }

  function tick() {
    for (const row of document.querySelectorAll("#batches [data-batch-id]")) {
      const batch = state.known.get(row.dataset.batchId);
      if (isRunning(batch)) {
        row.querySelector(".batch-elapsed").textContent = "Elapsed " + elapsedText(batch);
      }
    }
    pm.gallery.tick();
  }

  function init() {
    document.getElementById("newer").addEventListener("click", (e) => turnPage(-1, e.currentTarget));
    document.getElementById("older").addEventListener("click", (e) => turnPage(+1, e.currentTarget));
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) clearTimeout(state.timer);
      else refresh();
    });
    setInterval(tick, 1000);
    refresh();
  }

  /** Back to the first page (after an upload: the new batch is the newest). */
  function showNewest() {
    state.cursors = [null];
    return refresh();
  }

  pm.batches = {
    init, refresh, showNewest, update, syncStreams, elapsedText, countsText, shortId, el,
    isFinal: (batch) => Boolean(batch && batch.finished_at),
    known: (id) => state.known.get(id),
  };
})((window.pm = window.pm || {}));
