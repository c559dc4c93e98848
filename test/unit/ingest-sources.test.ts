import * as zlib from 'node:zlib';
import type { Logger } from 'pino';
import { describe, expect, it } from 'vitest';
import { crc32, crc32Js, rendezvous } from '../../src/ingest/sources/hash.js';
import { LOG_LINES_PER_WINDOW, LOG_WINDOW_MS, ThrottledLog } from '../../src/ingest/sources/throttled-log.js';

describe('throttled refusal log', () => {
  const setup = () => {
    const lines: Record<string, unknown>[] = [];
    let now = 1_000_000;
    const log = { warn: (fields: Record<string, unknown>) => lines.push(fields) } as unknown as Logger;
    let suppressed = 0;
    const t = new ThrottledLog(
      log,
      () => suppressed++,
      () => now,
    );
    return { t, lines, advance: (ms: number) => (now += ms), suppressed: () => suppressed };
  };

  it('writes 5 lines per source and reason per 10 s, then says how many it left out', () => {
    const { t, lines, advance, suppressed } = setup();
    for (let i = 0; i < 1000; i++) t.warn('redis', 'invalid_json', { i }, 'refused');
    for (let i = 0; i < 3; i++) t.warn('redis', 'invalid_body', { i }, 'refused');
    for (let i = 0; i < 7; i++) t.warn('stream', 'invalid_json', { i }, 'refused');
    expect(lines.length).toBe(LOG_LINES_PER_WINDOW + 3 + LOG_LINES_PER_WINDOW);
    expect(suppressed()).toBe(1000 - 5 + 2);
    advance(LOG_WINDOW_MS - 1);
    t.warn('redis', 'invalid_json', {}, 'refused');
    expect(lines.length).toBe(13); // still the same window
    advance(1);
    t.warn('redis', 'invalid_json', { last: true }, 'refused');
    expect(lines.at(-1)).toMatchObject({
      source: 'redis',
      reason: 'invalid_json',
      last: true,
      suppressed: 996,
    });
    t.warn('redis', 'invalid_json', {}, 'refused');
    expect(lines.at(-1)).not.toHaveProperty('suppressed');
  });
});

describe('ownership hashing', () => {
  it('the JavaScript CRC-32 is zlib’s', () => {
    const native = (zlib as { crc32?: (d: Uint8Array | string, v?: number) => number }).crc32;
    for (const s of ['', 'a', 'pushrelay:publish', '{"event":"x","users":["é"]}', 'x'.repeat(10_000)]) {
      expect(crc32Js(s)).toBe(crc32(s));
      if (native) expect(crc32Js(s)).toBe(native(s));
      expect(crc32Js(Buffer.from(s), 12345)).toBe(crc32(Buffer.from(s), 12345));
    }
  });

  it('spreads items evenly and moves only the removed member’s items', () => {
    const members = ['node-a', 'node-b', 'node-c', 'node-d'].map((id) => ({ id, seed: crc32(id) }));
    const owners = Array.from({ length: 8000 }, (_, i) => rendezvous(crc32(`message ${i}`), members)!.id);
    for (const m of members) {
      const share = owners.filter((o) => o === m.id).length / owners.length;
      expect(share).toBeGreaterThan(0.2);
      expect(share).toBeLessThan(0.3);
    }
    const without = members.filter((m) => m.id !== 'node-c');
    owners.forEach((owner, i) => {
      const now = rendezvous(crc32(`message ${i}`), without)!.id;
      if (owner !== 'node-c') expect(now).toBe(owner);
    });
  });
});
