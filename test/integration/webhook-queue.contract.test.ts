import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPresence,
  type LocalMembership,
  type Presence,
  presenceChannels,
} from '../../src/presence/index.js';
import { createRedis, isReady, type Redis } from '../../src/redis/client.js';
import { type RedisNames, redisNames } from '../../src/redis/keys.js';
import { EventIds } from '../../src/webhooks/events.js';
import { createWebhookQueue, type WebhookQueue } from '../../src/webhooks/index.js';
import { encodeItem, RedisWebhookQueue } from '../../src/webhooks/redis.js';
import { COUNTED, type QueueItem } from '../../src/webhooks/types.js';
import { type RedisClusterSetup, startRedisCluster } from '../helpers/cluster.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

const log = pino({ level: 'silent' });
const E = 'w1';
const LIMITS = { maxBytes: 10_000, maxDeadLetters: 3 };
const item = (json: string, extra: Partial<QueueItem> = {}): QueueItem => ({
  hold: 0,
  tag: '',
  json,
  ...extra,
});
const jsons = (items: readonly QueueItem[]) => items.map((i) => i.json);

/**
 * One contract for both drivers. `make` gives two handles on one queue (two
 * nodes of a cluster; the same object standalone) with a lease of `leaseMs`.
 */
function contract(
  kind: string,
  make: (leaseMs: number) => Promise<[WebhookQueue, WebhookQueue]>,
  leases: boolean,
) {
  describe(`webhook queue contract: ${kind}`, () => {
    it('hands out a key’s events in order, batched, and removes them on ack', async () => {
      const [q] = await make(10_000);
      for (let i = 1; i <= 5; i++) expect(await q.enqueue([E], 'user:a', item(`{"n":${i}}`))).toBe(true);
      await q.enqueue([E], 'user:b', item('{"b":1}'));
      const first = await q.claim(E, Date.now(), 10, 3);
      const a = first.find((c) => c.key === 'user:a')!;
      expect(jsons(a.items)).toEqual(['{"n":1}', '{"n":2}', '{"n":3}']);
      expect(first.find((c) => c.key === 'user:b')).toBeDefined();
      // Leased: nobody else gets the key meanwhile.
      expect(await q.claim(E, Date.now(), 10, 3)).toEqual([]);
      for (const c of first) await q.ack(c);
      const next = await q.claim(E, Date.now(), 10, 3);
      expect(next.map((c) => [c.key, jsons(c.items)])).toEqual([['user:a', ['{"n":4}', '{"n":5}']]]);
      await q.ack(next[0]!);
      expect(await q.claim(E, Date.now(), 10, 3)).toEqual([]);
      expect((await q.stats([E])).endpoints[E]).toEqual({ depth: 0, retrying: 0 });
    });

    it('keeps receivers apart: one receiver’s failures do not hold another’s events', async () => {
      const [q] = await make(10_000);
      await q.enqueue(['r1', 'r2'], 'user:c', item('{"c":1}'));
      const [c1] = await q.claim('r1', Date.now(), 10, 10);
      await q.retry(c1!, Date.now() + 60_000);
      const [c2] = await q.claim('r2', Date.now(), 10, 10);
      expect(jsons(c2!.items)).toEqual(['{"c":1}']);
      await q.ack(c2!);
      expect((await q.stats(['r1', 'r2'])).endpoints).toEqual({
        r1: { depth: 1, retrying: 1 },
        r2: { depth: 0, retrying: 0 },
      });
    });

    it('two nodes claiming at once: each key goes to one of them', async () => {
      const [q1, q2] = await make(10_000);
      for (let i = 0; i < 20; i++) await q1.enqueue([E], `user:l${i}`, item(`{"l":${i}}`));
      const [x, y] = await Promise.all([q1.claim(E, Date.now(), 20, 10), q2.claim(E, Date.now(), 20, 10)]);
      const keys = [...x, ...y].map((c) => c.key);
      expect(new Set(keys).size).toBe(keys.length);
      for (const c of x) await q1.ack(c);
      for (const c of y) await q2.ack(c);
      const rest = await q1.claim(E, Date.now(), 20, 10);
      for (const c of rest) await q1.ack(c);
      expect(keys.length + rest.length).toBe(20);
    });

    it('holds a debounced event until its time; the matching event cancels both, but not once it is due', async () => {
      const [q] = await make(10_000);
      const hold = Date.now() + 400;
      await q.enqueue([E], 'user:d', item('{"off":1}', { hold, tag: 'user.online' }));
      expect(await q.claim(E, Date.now(), 10, 10)).toEqual([]);
      await q.enqueue([E], 'user:d', item('{"on":1}'), 'user.online');
      await sleep(500);
      expect(await q.claim(E, Date.now(), 10, 10)).toEqual([]);
      // Due already: the pair is real and both go out.
      await q.enqueue([E], 'user:d', item('{"off":2}', { hold: Date.now() + 100, tag: 'user.online' }));
      await sleep(200);
      await q.enqueue([E], 'user:d', item('{"on":2}'), 'user.online');
      const [c] = await q.claim(E, Date.now(), 10, 10);
      expect(jsons(c!.items)).toEqual(['{"off":2}', '{"on":2}']);
      await q.ack(c!);
    });

    it('a retried key waits for its time and counts its attempts', async () => {
      const [q] = await make(10_000);
      await q.enqueue([E], 'user:r', item('{"r":1}'));
      const [c] = await q.claim(E, Date.now(), 10, 10);
      expect(c!.attempts).toBe(0);
      await q.retry(c!, Date.now() + 300);
      expect(await q.claim(E, Date.now(), 10, 10)).toEqual([]);
      expect((await q.stats([E])).endpoints[E]!.retrying).toBe(1);
      await sleep(400);
      const [again] = await q.claim(E, Date.now(), 10, 10);
      expect(again!.attempts).toBe(1);
      expect(again!.firstFailure).toBeGreaterThan(0);
      await q.ack(again!);
      expect((await q.stats([E])).endpoints[E]!.retrying).toBe(0);
    });

    it('dead letters: listed newest first, sent again on retry, discarded, the oldest dropped past the limit', async () => {
      const [q] = await make(10_000);
      for (const k of ['x1', 'x2', 'x3', 'x4']) {
        await q.enqueue([E], `user:${k}`, item(`{"k":"${k}"}`));
        const [c] = await q.claim(E, Date.now(), 10, 10);
        await q.bury(c!, 'HTTP 500');
        await sleep(5);
      }
      const page = await q.deadLetters(0, 10);
      expect(page.total).toBe(3);
      expect(page.items.map((d) => d.key)).toEqual(['user:x4', 'user:x3', 'user:x2']);
      expect(page.items[0]).toMatchObject({ endpoint: E, reason: 'HTTP 500', attempts: 1 });
      expect((await q.deadLetters(1, 1)).items.map((d) => d.key)).toEqual(['user:x3']);
      expect(await q.retryDead(page.items[0]!.id)).toBe(true);
      expect(await q.retryDead(page.items[0]!.id)).toBe(false);
      const [c] = await q.claim(E, Date.now(), 10, 10);
      expect(jsons(c!.items)).toEqual(['{"k":"x4"}']);
      await q.ack(c!);
      expect(await q.discardDead(page.items[1]!.id)).toBe(true);
      expect(await q.discardDead(page.items[1]!.id)).toBe(false);
      expect((await q.deadLetters(0, 10)).items.map((d) => d.key)).toEqual(['user:x2']);
      expect((await q.stats([E])).deadLetters).toBe(1);
    });

    it('refuses counted events past the byte bound and frees their bytes on ack', async () => {
      const [q] = await make(10_000);
      const big = item(`{"blob":"${'x'.repeat(3000)}"}`, { tag: COUNTED });
      expect(await q.enqueue([E], 'user:big', big)).toBe(true);
      expect(await q.enqueue([E], 'user:big', big)).toBe(true);
      expect(await q.enqueue([E], 'user:big', big)).toBe(true);
      expect(await q.enqueue([E], 'user:big', big)).toBe(false);
      // Small uncounted events are not refused.
      expect(await q.enqueue([E], 'user:big', item('{"small":1}'))).toBe(true);
      expect((await q.stats([E])).bytes).toBe(3 * Buffer.byteLength(big.json));
      const [c] = await q.claim(E, Date.now(), 10, 2);
      await q.ack(c!);
      expect((await q.stats([E])).bytes).toBe(Buffer.byteLength(big.json));
      expect(await q.enqueue([E], 'user:big', big)).toBe(true);
    });

    if (leases) {
      it('a node that claimed and died: its lease expires and another node gets the events; the dead node’s late ack changes nothing', async () => {
        const [q1, q2] = await make(300);
        await q1.enqueue([E], 'user:z', item('{"z":1}'));
        await q1.enqueue([E], 'user:z', item('{"z":2}'));
        const [dead] = await q1.claim(E, Date.now(), 10, 1);
        expect(await q2.claim(E, Date.now(), 10, 10)).toEqual([]);
        await sleep(400);
        const [taken] = await q2.claim(E, Date.now() + 400, 10, 10);
        expect(jsons(taken!.items)).toEqual(['{"z":1}', '{"z":2}']);
        await q1.ack(dead!);
        await q2.ack(taken!);
        expect(await q2.claim(E, Date.now() + 10_000, 10, 10)).toEqual([]);
      });
    }
  });
}

contract(
  'memory',
  async () => {
    const q = createWebhookQueue({ kind: 'memory', ...LIMITS });
    return [q, q];
  },
  false,
);

let prefixes = 0;
async function ready(client: Redis): Promise<Redis> {
  await waitFor(() => isReady(client), { what: 'Redis ready' });
  return client;
}

function redisDriver(kind: string, connect: () => Promise<Redis>) {
  const clients: Redis[] = [];
  afterAll(() => {
    for (const c of clients) c.disconnect();
  });
  contract(
    kind,
    async (leaseMs) => {
      const names = redisNames(`wq${++prefixes}`);
      const two = [await connect(), await connect()];
      clients.push(...two);
      return two.map((c) => createWebhookQueue({ kind: 'redis', redis: c, names, leaseMs, ...LIMITS })) as [
        WebhookQueue,
        WebhookQueue,
      ];
    },
    true,
  );
  presenceQueues(kind, connect, clients);
}

/** The presence script queues every transition's events in the same step, on one Redis and on a Cluster. */
function presenceQueues(kind: string, connect: () => Promise<Redis>, clients: Redis[]) {
  it(`${kind}: presence transitions are queued by the presence script, once, with their fields`, async () => {
    const client = await connect();
    clients.push(client);
    const names: RedisNames = redisNames(`wp${++prefixes}`);
    const queue = new RedisWebhookQueue(client, names, { ...LIMITS, leaseMs: 5000 });
    const hook = queue.presenceHook(
      [E],
      [
        'user.online',
        'user.offline',
        'channel.occupied',
        'channel.vacated',
        'member.added',
        'member.removed',
      ],
      0,
      () => ids.next(),
    );
    const ids = new EventIds();
    const local: LocalMembership = {
      stats: () => ({ sockets: 0, users: 0 }),
      sockets: () => 0,
      has: () => false,
      entries: () => [],
    };
    const p: Presence = createPresence({
      kind: 'redis',
      nodeId: 'n1',
      local,
      redis: client,
      names,
      ttlSeconds: 3,
      log,
      isPresenceChannel: presenceChannels((c) => c.startsWith('room:')),
      maxInfoBytes: 1000,
      webhooks: hook,
    });
    if (!queue.atomicDue)
      p.onEvent((e) => void queue.markDue([E], 'channel' in e ? e.channel : `user:${e.user}`));
    await p.join('user:ann', 's1', { user: 'ann', info: '{"name":"Ann"}' });
    await p.join('user:ann', 's2', { user: 'ann' });
    await p.join('room:1', 's1', { user: 'ann', info: '{"name":"Ann"}' });
    await p.leave('room:1', 's1');
    await p.leave('user:ann', 's1');
    await p.leave('user:ann', 's2');
    await sleep(100);
    const claims = await queue.claim(E, Date.now(), 10, 10);
    const byKey = Object.fromEntries(claims.map((c) => [c.key, c.items.map((i) => JSON.parse(i.json))]));
    expect(byKey['user:ann']).toEqual([
      {
        id: expect.any(String),
        type: 'user.online',
        ts: expect.any(Number),
        node: 'n1',
        user: 'ann',
        user_info: { name: 'Ann' },
      },
      { id: expect.any(String), type: 'user.offline', ts: expect.any(Number), node: 'n1', user: 'ann' },
    ]);
    expect(byKey['room:1']!.map((e) => `${e.type} ${e.user ?? ''}`.trim())).toEqual([
      'channel.occupied',
      'member.added ann',
      'member.removed ann',
      'channel.vacated',
    ]);
    expect(byKey['room:1']![1]).toMatchObject({ channel: 'room:1', user_info: { name: 'Ann' } });
    const all = Object.values(byKey).flat();
    expect(new Set(all.map((e) => e.id)).size).toBe(all.length);
    await p.close();
  });
}

describe('redis', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  redisDriver('redis', () => ready(createRedis(new URL(redis.url), 'command', log)));
});

describe('redis cluster', () => {
  it('a queue a crash left out of the due index is found by the sweep and delivered', async () => {
    const client = await ready(createRedis(cluster.target, 'command', log));
    try {
      const names = redisNames(`ws${++prefixes}`);
      const queue = new RedisWebhookQueue(client, names, { ...LIMITS, leaseMs: 5000 });
      // What the presence script writes; the node died before its ZADD.
      await client.rpush(names.webhookQueue('user:lost', E), encodeItem(item('{"lost":1}')));
      expect(await queue.claim(E, Date.now(), 10, 10)).toEqual([]);
      expect(await queue.sweep([E, 'other'])).toBe(1);
      // One node per period: a second sweep right away does nothing.
      expect(await queue.sweep([E])).toBe(0);
      const [c] = await queue.claim(E, Date.now(), 10, 10);
      expect(c).toMatchObject({ key: 'user:lost', items: [item('{"lost":1}')] });
      await queue.ack(c!);
    } finally {
      client.disconnect();
    }
  });

  let cluster: RedisClusterSetup;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(async () => {
    await cluster?.stop();
  });
  redisDriver('redis cluster', () => ready(createRedis(cluster.target, 'command', log)));
});
