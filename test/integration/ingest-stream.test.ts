import { createServer } from 'node:http';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// The durable ingest stream (`XADD <prefix>:publish * body '<json>'`) with
// nodes in this process on a real Redis: exactly once and in XADD order per
// channel (messages to several channels are split over partitions and still
// arrive once everywhere), bad entries dead-lettered without stopping the
// ones behind them, nothing left pending, the stream trimmed, and a node
// that drains handing its partitions over.

const group = async (r: Redis, key: string) => {
  const groups = (await r.xinfo('GROUPS', key)) as (string | number)[][];
  return groups.map((g) => Object.fromEntries(g.flatMap((v, i) => (i % 2 === 0 ? [[v, g[i + 1]]] : []))));
};

/** Every key of the prefix's ingest streams, and the pending count of each one's `pushrelay` group. */
async function pendingEverywhere(r: Redis, prefix: string): Promise<Record<string, number>> {
  const keys = [`${prefix}:publish`, ...(await r.keys(`${prefix}:{ingest:publish:*}`))];
  const out: Record<string, number> = {};
  for (const k of keys) {
    if ((await r.type(k)) !== 'stream') continue;
    for (const g of await group(r, k)) out[k] = Number(g.pending) + Number(g.lag ?? 0);
  }
  return out;
}

describe('ingest stream', () => {
  let redis: RedisServer;
  let r: Redis;
  let prefixes = 0;
  const cleanup: (() => unknown)[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    r = redis.client();
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });
  afterAll(() => redis.stop());

  async function nodes(n: number, extra: Record<string, string> = {}) {
    const prefix = `st${++prefixes}`;
    const env = { REDIS_URL: redis.url, PUSHRELAY_PREFIX: prefix, PUSHRELAY_RATE_LIMIT: '0', ...extra };
    const list: Awaited<ReturnType<typeof startInProcess>>[] = [];
    for (let i = 0; i < n; i++) list.push(await startInProcess(env));
    cleanup.push(() => Promise.all(list.map((x) => x.stop())));
    return { prefix, nodes: list };
  }

  async function client(url: string, user: string, channels: string[]): Promise<TestClient> {
    const c = await connectClient(url, await token(user, { channels }));
    cleanup.push(() => c.close());
    if (channels.length > 0) expect(await c.request('subscribe', { channels })).toMatchObject({ ok: true });
    return c;
  }

  it('delivers every entry once, in XADD order per channel, across partitions and nodes', async () => {
    const {
      prefix,
      nodes: [a, b],
    } = await nodes(2);
    // The first node took every partition; once it sees the second, each holds half.
    await waitFor(
      () => [a!, b!].every((n) => n.relay.sources.streams!.ownership()[0]!.partitions.length === 8),
      {
        what: 'the partitions shared',
      },
    );
    const channels = Array.from({ length: 12 }, (_, i) => `feed:${i}`);
    // One subscriber per channel, alternating nodes, plus a user on node B.
    const subs = await Promise.all(channels.map((c, i) => client([a!, b!][i % 2]!.url, `u${i}`, [c])));
    const zoe = await client(b!.url, 'zoe', []);
    const targets = (i: number) =>
      i % 7 === 0
        ? [channels[i % 12]!, channels[(i + 5) % 12]!, channels[(i + 9) % 12]!]
        : [channels[i % 12]!];
    const count = 600;
    const pipeline = r.pipeline();
    for (let i = 0; i < count; i++) {
      const body = {
        event: 'tick',
        data: { i },
        channels: targets(i),
        ...(i % 10 === 0 ? { users: ['zoe'] } : {}),
      };
      pipeline.xadd(`${prefix}:publish`, '*', 'body', JSON.stringify(body));
    }
    await pipeline.exec();

    const expected = channels.map((c) => [...Array(count).keys()].filter((i) => targets(i).includes(c)));
    await waitFor(() => subs.every((s, k) => s.events('tick').length >= expected[k]!.length), {
      timeoutMs: 30_000,
      what: 'every channel subscriber to get its entries',
    });
    await waitFor(() => zoe.events('tick').length >= count / 10, { what: 'zoe to get her entries' });
    subs.forEach((s, k) => {
      const got = s.events('tick').map((e) => (e.data as { i: number }).i);
      expect(got, channels[k]).toEqual(expected[k]); // every one, once, in XADD order
    });
    expect(zoe.events('tick').map((e) => (e.data as { i: number }).i)).toEqual(
      [...Array(count).keys()].filter((i) => i % 10 === 0),
    );
    // Both nodes owned partitions and published; the stream's groups have nothing left.
    const published = await Promise.all(
      [a!, b!].map(async (n) => {
        const text = await (await fetch(`${n.url}/metrics`)).text();
        return Number(
          /pushrelay_ingest_messages_total\{source="stream",outcome="published"\} (\d+)/.exec(text)?.[1] ?? 0,
        );
      }),
    );
    expect(published.every((p) => p > 0)).toBe(true);
    await waitFor(async () => Object.values(await pendingEverywhere(r, prefix)).every((p) => p === 0), {
      what: 'no entry pending in any group',
    });
    expect((await group(r, `${prefix}:publish`))[0]).toMatchObject({ name: 'pushrelay', pending: 0 });
    // Trimmed: what every group acknowledged is gone.
    await waitFor(async () => (await r.xlen(`${prefix}:publish`)) <= 1, { what: 'the stream trimmed' });
  });

  it('dead-letters bad entries with reason, entry and body, and delivers the entries behind them', async () => {
    const {
      prefix,
      nodes: [a],
    } = await nodes(1, { PUSHRELAY_MAX_PAYLOAD_BYTES: '2048' });
    const sub = await client(a!.url, 'ann', ['bad:ok']);
    const key = `${prefix}:publish`;
    const good = (i: number) => JSON.stringify({ event: 'fine', channels: ['bad:ok'], data: { i } });
    const bad: [string, string[]][] = [
      ['invalid_json', ['body', '{"event": "x", channels']],
      ['invalid_body', ['body', JSON.stringify({ event: 'x', channels: ['bad:ok'], colour: 'red' })]],
      ['invalid_body', ['body', JSON.stringify({ event: 'x', channels: 'bad:ok' })]],
      ['invalid_body', ['body', JSON.stringify({ event: 42, channels: ['bad:ok'] })]],
      [
        'payload_too_large',
        ['body', JSON.stringify({ event: 'x', channels: ['bad:ok'], data: 'y'.repeat(5000) })],
      ],
      ['no_body', ['payload', good(-1)]],
      ['no_target', ['body', JSON.stringify({ event: 'x' })]],
      ['invalid_channel', ['body', JSON.stringify({ event: 'x', channels: ['no spaces'] })]],
    ];
    const ids: string[] = [];
    for (let i = 0; i < bad.length; i++) {
      await r.xadd(key, '*', 'body', good(i));
      ids.push((await r.xadd(key, '*', ...bad[i]![1]))!);
    }
    await r.xadd(key, '*', 'body', good(bad.length));
    await sub.waitForEvent('fine', bad.length + 1);
    expect(sub.events('fine').map((e) => (e.data as { i: number }).i)).toEqual([
      ...Array(bad.length + 1).keys(),
    ]);
    const dead = await waitFor(async () => {
      const d = await r.xrange(`${prefix}:publish:dead`, '-', '+');
      return d.length === bad.length ? d : undefined;
    });
    dead.forEach(([, fields], i) => {
      const f = Object.fromEntries(fields.flatMap((v, j) => (j % 2 === 0 ? [[v, fields[j + 1]]] : [])));
      expect(f.reason, `entry ${i}`).toBe(bad[i]![0]);
      expect(f.entry).toBe(ids[i]);
      expect(f.body!.length).toBeLessThanOrEqual(1024);
      expect(bad[i]![1].join(' ').startsWith(f.body!) || bad[i]![1][1]!.startsWith(f.body!)).toBe(true);
    });
    await waitFor(async () => Object.values(await pendingEverywhere(r, prefix)).every((p) => p === 0));
    const text = await (await fetch(`${a!.url}/metrics`)).text();
    expect(text).toContain('pushrelay_ingest_dead_letters_total{source="stream",reason="invalid_body"} 3');
    expect(text).toContain('pushrelay_ingest_dead_letters_total{source="stream",reason="no_body"} 1');
  });

  it('a publish split over partitions calls the offline fallback once, naming every offline user', async () => {
    const calls: { users: string[]; message: { id: string } }[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        calls.push(JSON.parse(body));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    cleanup.push(() => receiver.close());
    const { port } = receiver.address() as { port: number };
    const {
      prefix,
      nodes: [a],
    } = await nodes(1, {
      PUSHRELAY_OFFLINE_WEBHOOK: `http://127.0.0.1:${port}/offline`,
      PUSHRELAY_OFFLINE_WEBHOOK_SECRET: 'webhook-secret-for-tests-0123456789',
    });
    const online = await client(a!.url, 'on-1', ['split:x']);
    // Twelve users: their own channels fall in several of the 16 partitions.
    const users = ['on-1', ...Array.from({ length: 11 }, (_, i) => `off-${i}`)];
    const id = await r.xadd(
      `${prefix}:publish`,
      '*',
      'body',
      JSON.stringify({ event: 'split', users, channels: ['split:x'], data: 1 }),
    );
    await online.waitForEvent('split', 2); // once on its own channel, once on split:x
    await waitFor(() => calls.length > 0, { what: 'the offline webhook' });
    await sleep(500);
    expect(calls.length).toBe(1);
    expect(calls[0]!.users.sort()).toEqual(users.slice(1).sort());
    expect(calls[0]!.message.id).toBe(id);
  });

  it('a draining node hands its partitions and the router to the others at once; order holds', async () => {
    const { prefix, nodes: list } = await nodes(2);
    const [a, b] = list as [(typeof list)[0], (typeof list)[0]];
    const sub = await client(b.url, 'dora', ['drain:x', 'drain:y']);
    await waitFor(() => a.relay.sources.streams!.ownership()[0]!.partitions.length >= 8, {
      what: 'a fair share on A',
    });
    let i = 0;
    const send = async (n: number) => {
      const p = r.pipeline();
      for (const end = i + n; i < end; i++) {
        p.xadd(
          `${prefix}:publish`,
          '*',
          'body',
          JSON.stringify({ event: 'd', channels: [i % 2 ? 'drain:x' : 'drain:y'], data: { i } }),
        );
      }
      await p.exec();
    };
    await send(100);
    const draining = a.relay.drain();
    await send(100);
    await waitFor(() => b.relay.sources.streams!.ownership()[0]!.partitions.length === 16, {
      timeoutMs: 5000,
      what: 'B to own every partition',
    });
    expect(b.relay.sources.streams!.ownership()[0]!.router).toBe(true);
    await send(100);
    await sub.waitForEvent('d', 300, 15_000);
    const got = sub.events('d').map((e) => (e.data as { i: number }).i);
    for (const parity of [0, 1]) {
      const mine = got.filter((x) => x % 2 === parity);
      expect(mine).toEqual([...Array(300).keys()].filter((x) => x % 2 === parity));
    }
    await draining;
    await waitFor(async () => Object.values(await pendingEverywhere(r, prefix)).every((p) => p === 0));
  });
});
