/* The page's side of the /v1 API: the key, JSON requests, the upload, event streams.
 *
 * The key goes in an Authorization header, so event streams are read with fetch() and
 * parsed here: EventSource cannot send headers.
 */
"use strict";

(function (pm) {
  const KEY_STORAGE = "pixelmill.api_key";
  const needsKey =
    document.querySelector('meta[name="pixelmill-auth"]')?.getAttribute("content") === "key";
  let keyPrompt = null; // the pending promise while the key dialog is open

  /** An API error (from the JSON error body) or a network failure. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    /** API errors read "code: message"; the page's own (network, not JSON) lead with
     * plain words and keep the code in brackets, so it can still be searched for. */
    describe() {
      if (this.status === 0 || this.code.startsWith("http_")) {
        const text = this.message.charAt(0).toUpperCase() + this.message.slice(1);
        return `${text} (${this.code})`;
      }
      return `${this.code}: ${this.message}`;
    }
  }

  // The service takes a key of visible ASCII only (0x21-0x7E); anything else would make
  // Headers.set() throw on every request.
  const VISIBLE_ASCII = /^[\x21-\x7e]+$/;
  const KEY_CHARACTERS =
    "The key can hold only visible ASCII characters (letters, digits and punctuation: " +
    "no spaces, accents or other alphabets). Check it and try again.";

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE);
    } catch (error) {
      return memoryKey; // storage refused (private mode): keep it in memory
    }
  }
  let memoryKey = null;
  /** A key left by an older page that the service could never take: forget it. */
  function discardUnusableKey() {
    const key = storedKey();
    if (key && !VISIBLE_ASCII.test(key)) storeKey(null);
  }
  function storeKey(key) {
    memoryKey = key;
    try {
      if (key === null) sessionStorage.removeItem(KEY_STORAGE);
      else sessionStorage.setItem(KEY_STORAGE, key);
    } catch (error) {
      /* memoryKey holds it */
    }
  }

  /** Ask for the key in #key-dialog; resolves with it once given. */
  function askForKey(reason) {
    if (keyPrompt) return keyPrompt;
    const dialog = document.getElementById("key-dialog");
    const form = document.getElementById("key-form");
    const input = document.getElementById("key-input");
    const error = document.getElementById("key-error");
    error.textContent = reason || "";
    input.value = "";
    keyPrompt = new Promise((resolve) => {
      function submitted(event) {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) {
          error.textContent = "Enter the key.";
          return;
        }
        if (!VISIBLE_ASCII.test(key)) {
          error.textContent = KEY_CHARACTERS;
          input.focus();
          return;
        }
        form.removeEventListener("submit", submitted);
        storeKey(key);
        keyPrompt = null;
        dialog.close();
        // Not back to <body>: to the first thing the user came for.
        document.getElementById("file-input").focus();
        resolve(key);
      }
      form.addEventListener("submit", submitted);
    });
    if (!dialog.open) dialog.showModal();
    input.focus();
    return keyPrompt;
  }

  /** The key to send (asked for when needed and not known), or null without auth. */
  async function currentKey() {
    if (!needsKey) return null;
    return storedKey() || askForKey("");
  }

  async function authHeaders(extra) {
    const headers = new Headers(extra || {});
    const key = await currentKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    return headers;
  }

  /** A refused key: forget it and ask again (the caller retries). */
  function keyRefused() {
    storeKey(null);
    return askForKey("The key was refused: check it and try again.");
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.code) {
        return new ApiError(response.status, body.error.code, String(body.error.message));
      }
    } catch (error) {
      /* not our JSON error shape */
    }
    const why = response.statusText ? ` (${response.statusText})` : "";
    return new ApiError(response.status, "http_" + response.status, `the service answered ${response.status}${why}`);
  }

  /** fetch() with the key; retries once the user gives a new key after a 401. */
  async function authorisedFetch(path, init) {
    for (;;) {
      const headers = await authHeaders(init && init.headers);
      let response;
      try {
        response = await fetch(path, { ...init, headers });
      } catch (error) {
        if (error.name === "AbortError") throw error;
        throw new ApiError(0, "network", "the service cannot be reached");
      }
      if (response.status === 401 && needsKey) {
        await keyRefused();
        continue;
      }
      return response;
    }
  }

  /** A JSON request; throws ApiError with the body's code and message. */
  async function request(path, init) {
    const response = await authorisedFetch(path, init);
    if (!response.ok) throw await errorOf(response);
    return response.status === 204 ? null : response.json();
  }

  /** POST the files with XMLHttpRequest (fetch reports no upload progress). */
  async function upload(path, form, onProgress) {
    for (;;) {
      const key = await currentKey();
      const answer = await new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", path);
        if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
        xhr.responseType = "text";
        xhr.upload.onprogress = (event) => {
          if (event.lengthComputable) onProgress(event.loaded / event.total);
        };
        xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText });
        xhr.onerror = () => reject(new ApiError(0, "network", "the upload did not reach the service"));
        xhr.send(form);
      });
      if (answer.status === 401 && needsKey) {
        await keyRefused();
        continue;
      }
      let body = null;
      try {
        body = JSON.parse(answer.text);
      } catch (error) {
        /* handled below */
      }
      if (answer.status >= 200 && answer.status < 300 && body) return body;
      if (body && body.error) throw new ApiError(answer.status, body.error.code, body.error.message);
      throw new ApiError(answer.status, "http_" + answer.status, "the upload was refused");
    }
  }

  /** Parses a text/event-stream: feed() chunks of text, onEvent({type, data, id}). */
  class SseParser {
    constructor(onEvent, onRetry) {
      this.onEvent = onEvent;
      this.onRetry = onRetry;
      this.buffer = "";
      this.pendingCr = false;
      this.reset();
    }
    reset() {
      this.type = "";
      this.data = [];
      this.id = null;
    }
    feed(text) {
      // A chunk that ended in "\r" may have split a "\r\n": drop the "\n" half.
      if (this.pendingCr && text.startsWith("\n")) text = text.slice(1);
      this.pendingCr = text.endsWith("\r");
      this.buffer += text;
      const lines = this.buffer.split(/\r\n|\r|\n/);
      this.buffer = lines.pop();
      for (const line of lines) this.line(line);
    }
    line(line) {
      if (line === "") {
        if (this.data.length || this.type) {
          this.onEvent({ type: this.type || "message", data: this.data.join("\n"), id: this.id });
        }
        this.reset();
        return;
      }
      if (line.startsWith(":")) return; // a comment (keep-alive)
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && !value.includes("\0")) this.id = value;
      else if (field === "retry" && /^[0-9]+$/.test(value)) this.onRetry(Number(value));
    }
  }

  /**
   * Follow a batch's event stream until `done`, a 204 or a 404 (or stop() is called).
   * A dropped connection is reopened after the server's `retry` delay, with
   * Last-Event-ID so nothing is repeated or missed.
   */
  function followEvents(batchId, handlers) {
    const controller = new AbortController();
    let lastEventId = null;
    let retryMs = 3000;
    let finished = false;
    const stop = () => {
      finished = true;
      controller.abort();
    };
    const sleep = (ms) =>
      new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        controller.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });

    async function readOnce() {
      const headers = { Accept: "text/event-stream" };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      const response = await authorisedFetch(`/v1/batches/${batchId}/events`, {
        headers,
        signal: controller.signal,
        cache: "no-store",
      });
      if (response.status === 204 || response.status === 404) {
        finished = true;
        if (response.status === 404) handlers.onGone?.();
        return;
      }
      if (!response.ok || !response.body) throw await errorOf(response);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser(
        (event) => {
          if (event.id !== null) lastEventId = event.id;
          let data = null;
          try {
            data = JSON.parse(event.data);
          } catch (error) {
            return; // not ours
          }
          handlers.onEvent(event.type, data);
          if (event.type === "done" || event.type === "error") stop();
        },
        (ms) => (retryMs = ms),
      );
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
      }
    }

    (async () => {
      while (!finished) {
        try {
          await readOnce();
        } catch (error) {
          if (finished || error.name === "AbortError") break;
        }
        if (!finished) await sleep(retryMs);
      }
      handlers.onClose?.();
    })();
    return { stop };
  }

  if (needsKey) discardUnusableKey();

  pm.api = { ApiError, request, upload, followEvents, SseParser, needsKey, currentKey };
})((window.pm = window.pm || {}));
