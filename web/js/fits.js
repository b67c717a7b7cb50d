// fits.js — just enough FITS to preview an upload in the browser (which
// cannot show FITS): the primary HDU's 2-D or 3-plane image, BITPIX 8/16/32/
// -32/-64 with BSCALE/BZERO, drawn with an asinh stretch between the 0.5 and
// 99.5 percentiles. The server decodes the file itself; this is display only.

function header(bytes) {
  const cards = {};
  for (let off = 0; off + 80 <= bytes.length; off += 80) {
    const card = String.fromCharCode(...bytes.subarray(off, off + 80));
    const key = card.slice(0, 8).trim();
    if (key === 'END') return { cards, dataStart: Math.ceil((off + 80) / 2880) * 2880 };
    if (card[8] !== '=') continue;
    let v = card.slice(10).split('/')[0].trim();
    if (v.startsWith("'")) v = v.slice(1, v.lastIndexOf("'")).trim();
    else if (v === 'T' || v === 'F') v = v === 'T';
    else v = Number(v);
    cards[key] = v;
  }
  throw new Error('no END card in the FITS header');
}

function reader(view, bitpix) {
  switch (bitpix) {
    case 8: return [1, (o) => view.getUint8(o)];
    case 16: return [2, (o) => view.getInt16(o)];
    case 32: return [4, (o) => view.getInt32(o)];
    case -32: return [4, (o) => view.getFloat32(o)];
    case -64: return [8, (o) => view.getFloat64(o)];
    default: throw new Error(`BITPIX ${bitpix} is not supported`);
  }
}

// Returns a canvas with the image (RGB when there are 3 planes: g, r, z
// shown as b, g, r), or throws with a sentence.
export function fitsCanvas(buffer) {
  const bytes = new Uint8Array(buffer);
  const { cards, dataStart } = header(bytes);
  const w = cards.NAXIS1, h = cards.NAXIS2, planes = cards.NAXIS >= 3 ? cards.NAXIS3 : 1;
  if (!(w > 0 && h > 0) || w * h > 4096 * 4096) throw new Error('unusable NAXIS1/NAXIS2');
  const [size, get] = reader(new DataView(buffer), cards.BITPIX);
  if (dataStart + w * h * Math.min(planes, 3) * size > bytes.length) throw new Error('the FITS data are truncated');
  const scale = cards.BSCALE ?? 1, zero = cards.BZERO ?? 0;
  const chans = [];
  for (let p = 0; p < Math.min(planes, 3); p++) {
    const a = new Float64Array(w * h);
    for (let i = 0; i < w * h; i++) a[i] = get(dataStart + (p * w * h + i) * size) * scale + zero;
    chans.push(a);
  }
  const all = Float64Array.from(chans.flatMap((c) => Array.from(c)).filter(Number.isFinite)).sort();
  const lo = all[Math.floor(all.length * 0.005)] ?? 0, hi = all[Math.floor(all.length * 0.995)] ?? 1;
  const span = hi > lo ? hi - lo : 1, soft = 0.1;
  const stretch = (v) => Math.asinh(Math.max(0, (v - lo) / span) / soft) / Math.asinh(1 / soft);
  const canvas = document.createElement('canvas');
  canvas.width = w, canvas.height = h;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(w, h);
  const order = chans.length === 3 ? [2, 1, 0] : [0, 0, 0];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const src = (h - 1 - y) * w + x, dst = (y * w + x) * 4;   // FITS rows run bottom-up
      for (let c = 0; c < 3; c++) img.data[dst + c] = Math.round(255 * Math.min(1, stretch(chans[order[c]][src])));
      img.data[dst + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}
