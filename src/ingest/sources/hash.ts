import * as zlib from 'node:zlib';

// Cheap hashes for deciding which node handles what. Every node must compute
// the same values, so the JavaScript CRC-32 below gives exactly what
// zlib.crc32 (Node >= 22.2) gives, and is used where that is missing.

const TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  TABLE[n] = c;
}

function crc32Js(data: Uint8Array | string, value = 0): number {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  let c = ~value;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

const native = (zlib as { crc32?: (data: Uint8Array | string, value?: number) => number }).crc32;

/** CRC-32 (the zlib one), continuing from `value`: unsigned 32-bit. */
export const crc32: (data: Uint8Array | string, value?: number) => number = native ?? crc32Js;

/** Exported for the test that checks both implementations agree. */
export { crc32Js };

/** Murmur3's finalizer: spreads every input bit over the whole 32-bit result. */
export function mix32(h: number): number {
  let x = h >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * Rendezvous (highest random weight) choice: the candidate whose mixed
 * score for `hash` is highest. Adding or removing one candidate moves only
 * the items it wins or held; ties go to the smaller id so every node agrees.
 */
export function rendezvous<T extends { readonly id: string; readonly seed: number }>(
  hash: number,
  candidates: Iterable<T>,
): T | undefined {
  let best: T | undefined;
  let bestScore = -1;
  for (const c of candidates) {
    const score = mix32(hash ^ c.seed);
    if (score > bestScore || (score === bestScore && best !== undefined && c.id < best.id)) {
      best = c;
      bestScore = score;
    }
  }
  return best;
}
