import * as zlib from 'node:zlib';
import type { Logger } from 'pino';
import { describe, expect, it } from 'vitest';
import { crc32, crc32Js, rendezvous } from '../../src/ingest/sources/hash.js';
import { IngestMembership } from '../../src/ingest/sources/membership.js';
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

describe('raw pub/sub ownership around a membership change', () => {
  /** A node's view, built from heartbeat replies a fake Redis answers at true times `trueAt`. */
  function node(id: string, skew: number, clock: { t: number }) {
    let replyAt = 0;
    let members: string[] = [];
    const fake = {
      defineCommand() {},
      relayIngestMembers: async () => [String(replyAt), ...members],
    } as unknown as ConstructorParameters<typeof IngestMembership>[0];
    const m = new IngestMembership(
      fake,
      { ingestMembers: 'm', ingestActive: 'a' } as never,
      id,
      () => clock.t + skew,
    );
    return {
      m,
      /** A heartbeat sent at true time `sent`, run by Redis at `ran`, answered at `received`. */
      async read(sent: number, ran: number, received: number, list: string[]) {
        members = list;
        replyAt = ran;
        clock.t = sent;
        const p = m.beat(true);
        clock.t = received;
        await p;
      },
    };
  }

  /**
   * 20 membership changes (node c activating at T), each node with its own clock skew and round
   * trips, messages every 7 ms from 2 s before to 5 s after; each node decides a message up to
   * `lagMs` after the earliest one (a busy event loop).
   */
  async function handover(lagMs: number) {
    let seed = 7;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const T = 1_000_000; // node c becomes active at this Redis time
    const list = (expiry: number) => [
      'a',
      String(expiry),
      '0',
      'b',
      String(expiry),
      '0',
      'c',
      String(expiry),
      String(T),
    ];
    let violations = 0;
    let both = 0;
    let lost = 0;
    for (let trial = 0; trial < 20; trial++) {
      const clocks = [{ t: 0 }, { t: 0 }, { t: 0 }];
      const nodes = ['a', 'b', 'c'].map((id, i) => node(id, (random() - 0.5) * 10_000, clocks[i]!));
      // Reads over the last seconds, each run by Redis at a random point of its round trip; the last one
      // of nodes b and c took up to 2.5 s (a loaded machine), as some earlier ones did.
      for (let r = 0; r < 6; r++) {
        for (const [i, n] of nodes.entries()) {
          const sent = T - 6000 + r * 400 + random() * 300;
          const rtt = (r === 5 && i > 0) || r === 2 ? random() * 2500 : 1 + random() * 5;
          await n.read(sent, sent + random() * rtt, sent + rtt, list(T + 60_000));
        }
      }
      // Then a heartbeat a second each, at each node's own phase, while messages come in.
      const nextRead = nodes.map(() => T - 3000 + random() * 1000);
      for (let t = T - 3000; t < T + 5000; t += 7) {
        for (const [i, n] of nodes.entries()) {
          if (t < nextRead[i]!) continue;
          const rtt = 1 + random() * 5;
          await n.read(t, t + random() * rtt, t + rtt, list(T + 60_000));
          nextRead[i]! += 1000;
        }
        // Messages once every node has read in this loop: a view older than FRESH_MS (the first
        // reads' round trips plus a lag) rightly handles nothing, which is not what this measures.
        if (t < T - 2000) continue;
        const hash = Math.floor(random() * 2 ** 32);
        const verdicts = nodes.map((n, i) => {
          clocks[i]!.t = t + random() * lagMs;
          return n.m.decide(hash);
        });
        const handlers = verdicts.filter((v) => v === 'mine' || v === 'claim');
        if (handlers.length === 0) lost++;
        if (handlers.length > 1) {
          both++;
          if (handlers.some((v) => v === 'mine')) violations++;
        }
      }
    }
    return { violations, lost, both };
  }

  it('has one node handle each message, or two that both claim it, whatever their clock skew and round trips', async () => {
    // Nodes within a second of each other: none lost, none handled by two without both claiming.
    const { violations, lost, both } = await handover(950);
    expect({ violations, lost }).toEqual({ violations: 0, lost: 0 });
    expect(both).toBeGreaterThan(0); // the windows were really exercised
  });

  it('loses nothing around a switch while the nodes are within three seconds of each other', async () => {
    expect((await handover(2900)).lost).toBe(0);
  });
});
