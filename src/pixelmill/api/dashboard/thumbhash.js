/* ThumbHash decoding: a placeholder's few bytes -> a 32 px preview, as a PNG data URL.
 *
 * The same arithmetic as our encoder and decoder (src/pixelmill/core/placeholder.py,
 * after github.com/evanw/thumbhash): a header with the DC terms and scales, then 4-bit
 * AC terms of a DCT in an LPQ (luminance, yellow-blue, red-green) space, plus alpha.
 */
"use strict";

(function (pm) {
  /** Width / height of the image, as approximately as the hash records it. */
  function aspectRatio(hash) {
    const hasAlpha = hash[2] & 0x80;
    const landscape = hash[4] & 0x80;
    const lx = landscape ? (hasAlpha ? 5 : 7) : hash[3] & 7;
    const ly = landscape ? hash[3] & 7 : hasAlpha ? 5 : 7;
    return lx / ly;
  }

  /** The preview's pixels: {width, height, rgba} with rgba a Uint8ClampedArray. */
  function decode(hash) {
    const header24 = hash[0] | (hash[1] << 8) | (hash[2] << 16);
    const header16 = hash[3] | (hash[4] << 8);
    const lDc = (header24 & 63) / 63;
    const pDc = ((header24 >> 6) & 63) / 31.5 - 1;
    const qDc = ((header24 >> 12) & 63) / 31.5 - 1;
    const lScale = ((header24 >> 18) & 31) / 31;
    const hasAlpha = (header24 >> 23) !== 0;
    const pScale = ((header16 >> 3) & 63) / 63;
    const qScale = ((header16 >> 9) & 63) / 63;
    const landscape = (header16 >> 15) !== 0;
    const lx = Math.max(3, landscape ? (hasAlpha ? 5 : 7) : header16 & 7);
    const ly = Math.max(3, landscape ? header16 & 7 : hasAlpha ? 5 : 7);
    const aDc = hasAlpha ? (hash[5] & 15) / 15 : 1;
    const aScale = hasAlpha ? (hash[5] >> 4) / 15 : 0;
    const start = hasAlpha ? 6 : 5;
    let position = 0;

    // The AC terms of one channel, in the encoder's order: [cx, cy, value].
    function terms(nx, ny, scale) {
      const found = [];
      for (let cy = 0; cy < ny; cy++) {
        for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++) {
          const byte = hash[start + (position >> 1)];
          if (byte === undefined) throw new Error("truncated ThumbHash");
          const nibble = (byte >> ((position & 1) << 2)) & 15;
          found.push([cx, cy, (nibble / 7.5 - 1) * scale]);
          position++;
        }
      }
      return found;
    }

    const lAc = terms(lx, ly, lScale);
    const pAc = terms(3, 3, pScale * 1.25); // saturation boosted after quantising
    const qAc = terms(3, 3, qScale * 1.25);
    const aAc = hasAlpha ? terms(5, 5, aScale) : [];
    const ratio = aspectRatio(hash);
    const width = Math.round(ratio > 1 ? 32 : 32 * ratio);
    const height = Math.round(ratio > 1 ? 32 / ratio : 32);
    const rgba = new Uint8ClampedArray(width * height * 4);
    const fx = new Float64Array(7);
    const fy = new Float64Array(7);
    const sum = (ac) => {
      let total = 0;
      for (const [cx, cy, value] of ac) total += value * fx[cx] * fy[cy] * 2;
      return total;
    };
    const channel = (c) => Math.floor(Math.max(0, 255 * Math.min(1, c)));
    for (let y = 0, i = 0; y < height; y++) {
      for (let c = 0; c < 7; c++) fy[c] = Math.cos((Math.PI / height) * (y + 0.5) * c);
      for (let x = 0; x < width; x++, i += 4) {
        for (let c = 0; c < 7; c++) fx[c] = Math.cos((Math.PI / width) * (x + 0.5) * c);
        const l = lDc + sum(lAc);
        const p = pDc + sum(pAc);
        const q = qDc + sum(qAc);
        const a = aDc + sum(aAc);
        const b = l - (2 / 3) * p;
        const r = (3 * l - b + q) / 2;
        const g = r - q;
        rgba[i] = channel(r);
        rgba[i + 1] = channel(g);
        rgba[i + 2] = channel(b);
        rgba[i + 3] = channel(a);
      }
    }
    return { width, height, rgba };
  }

  /** Bytes of a base64 string (atob is in every browser we support). */
  function fromBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  /** The placeholder (base64 ThumbHash) as a PNG data URL, or null if it cannot be drawn. */
  function placeholderDataUrl(base64) {
    try {
      const { width, height, rgba } = decode(fromBase64(base64));
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const context = canvas.getContext("2d");
      if (!context) return null;
      context.putImageData(new ImageData(rgba, width, height), 0, 0);
      return canvas.toDataURL("image/png");
    } catch (error) {
      return null; // a malformed hash: the tile simply has no placeholder
    }
  }

  pm.thumbhash = { decode, aspectRatio, fromBase64, placeholderDataUrl };
})((window.pm = window.pm || {}));
