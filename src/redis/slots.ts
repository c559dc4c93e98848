import type { ChainableCommander } from 'ioredis';
import { isCluster, type Redis } from './client.js';

// Redis Cluster's key -> slot mapping (CRC16-XMODEM of the hash tag, mod
// 16384), so commands can be grouped by slot before they are sent: a Cluster
// script or pipeline may only touch keys of one slot.

const TABLE = new Uint16Array(256);
for (let i = 0; i < 256; i++) {
  let crc = i << 8;
  for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
  TABLE[i] = crc & 0xffff;
}

/** The Cluster slot of a key: only the part in the first non-empty `{...}` counts, if any. */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  let hashed = key;
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) hashed = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(hashed)) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ byte) & 0xff]!;
  return crc % 16384;
}

/** Groups items by the slot of their key, keeping each item's index. */
export function bySlot<T>(items: readonly T[], key: (item: T) => string): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  items.forEach((item, i) => {
    const slot = keySlot(key(item));
    const group = groups.get(slot);
    if (group) group.push(i);
    else groups.set(slot, [i]);
  });
  return groups;
}

/** One command of a batch: the key it touches (for its slot) and how to queue it. */
export interface BatchItem {
  readonly key: string;
  readonly add: (pipeline: ChainableCommander) => void;
}

/**
 * Runs commands as one pipeline on a single Redis, or as one pipeline per slot
 * (concurrently) on a Cluster, and answers the replies in the items' order.
 * Items of one slot keep their relative order; across slots there is none.
 */
export async function runBatch(
  redis: Redis,
  items: readonly BatchItem[],
): Promise<[Error | null, unknown][]> {
  if (items.length === 0) return [];
  if (!isCluster(redis)) {
    const pipeline = redis.pipeline();
    for (const item of items) item.add(pipeline);
    return ((await pipeline.exec()) ?? []) as [Error | null, unknown][];
  }
  const out: [Error | null, unknown][] = new Array(items.length);
  await Promise.all(
    [...bySlot(items, (i) => i.key).values()].map(async (indexes) => {
      const pipeline = redis.pipeline();
      for (const i of indexes) items[i]!.add(pipeline);
      const replies = ((await pipeline.exec()) ?? []) as [Error | null, unknown][];
      indexes.forEach((i, j) => {
        out[i] = replies[j] ?? [new Error('no reply'), null];
      });
    }),
  );
  return out;
}
