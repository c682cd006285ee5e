// COCO run-length encoding, as pycocotools writes it (maskApi.c rleFrString), decoded in the browser.
// A mask is {size: [height, width], counts: "compressed string"}; runs alternate 0s and 1s, starting
// with 0s, over the pixels in column-major order (down each column, then the next column).
"use strict";

function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1, c = 0;
    while (more) {
      c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// -> Uint8Array of height*width, row-major (index y*width + x), 1 inside the mask.
function rleDecode(rle) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
  const out = new Uint8Array(h * w);
  let i = 0, v = 0;
  for (const n of counts) {
    if (v) {
      for (let j = i; j < i + n; j++) out[(j % h) * w + Math.floor(j / h)] = 1;
    }
    i += n; v = 1 - v;
  }
  if (i !== h * w) throw new Error(`RLE covers ${i} pixels, not ${h}x${w}`);
  return out;
}

window.rleDecode = rleDecode;
