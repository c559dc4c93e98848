import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPresence,
  type LocalMembership,
  type Presence,
  presenceChannels,
} from '../../src/presence/index.js';
import type { PresenceWebhooks } from '../../src/presence/redis.js';
import { createRedis, isReady, type Redis } from '../../src/redis/client.js';
import { type RedisNames, redisNames } from '../../src/redis/keys.js';
import { EventIds } from '../../src/webhooks/events.js';
import { createWebhookQueue, type WebhookQueue } from '../../src/webhooks/index.js';
import { encodeItem, RedisWebhookQueue } from '../../src/webhooks/redis.js';
import { MESSAGE_TAG, type QueueItem } from '../../src/webhooks/types.js';
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

    it('a backlog of held keys: a claim takes the due ones only, and each held one once its time comes', async () => {
      const [q] = await make(10_000);
      const now = Date.now();
      for (let i = 0; i < 300; i++)
        await q.enqueue([E], `user:held${i}`, item(`{"h":${i}}`, { hold: now + 60_000 + i, tag: 't' }));
      await q.enqueue([E], 'user:due', item('{"due":1}'));
      const first = await q.claim(E, Date.now(), 10, 10);
      expect(first.map((c) => c.key)).toEqual(['user:due']);
      await q.ack(first[0]!);
      // A minute later the first held keys are due, earliest first.
      const later = await q.claim(E, now + 60_001, 10, 10);
      expect(later.map((c) => c.key).sort()).toEqual(['user:held0', 'user:held1']);
      for (const c of later) await q.ack(c);
      expect((await q.stats([E])).endpoints[E]!.depth).toBe(298);
    });

    it('refuses events past the byte bound and frees their bytes on ack', async () => {
      const [q] = await make(10_000);
      const big = item(`{"blob":"${'x'.repeat(3000)}"}`, { tag: MESSAGE_TAG });
      const size = Buffer.byteLength(big.json);
      expect(await q.enqueue([E], 'user:big', big)).toBe(true);
      expect(await q.enqueue([E], 'user:big', big)).toBe(true);
      expect(await q.enqueue([E], 'user:big', big)).toBe(true);
      expect(await q.enqueue([E], 'user:big', big)).toBe(false);
      // Every kind counts: a small event fits, until the bound is reached.
      const small = item(`{"small":"${'y'.repeat(500)}"}`);
      expect(await q.enqueue([E], 'user:big', small)).toBe(true);
      expect(await q.enqueue([E], 'user:big', small)).toBe(false);
      expect((await q.stats([E])).bytes).toBe(3 * size + Buffer.byteLength(small.json));
      const [c] = await q.claim(E, Date.now(), 10, 2);
      await q.ack(c!);
      expect((await q.stats([E])).bytes).toBe(size + Buffer.byteLength(small.json));
      expect(await q.enqueue([E], 'user:big', big)).toBe(true);
      // Per receiver: two receivers take twice the bytes, all or none.
      expect(await q.enqueue([E, 'w2'], 'user:two', big)).toBe(false);
    });

    it('a cancelled held event gives its bytes back; dead letters and their retry keep the count', async () => {
      const [q] = await make(10_000);
      const held = item('{"type":"user.offline"}', { hold: Date.now() + 60_000, tag: 'user.online' });
      expect(await q.enqueue([E], 'user:h', item('{"type":"user.online"}'), 'user.online')).toBe(true);
      expect(await q.enqueue([E], 'user:h', held)).toBe(true);
      const two = Buffer.byteLength('{"type":"user.online"}') + Buffer.byteLength(held.json);
      expect((await q.stats([E])).bytes).toBe(two);
      // The user comes back within the debounce: the held offline goes, and its bytes.
      expect(await q.enqueue([E], 'user:h', item('{"type":"user.online"}'), 'user.online')).toBe(true);
      expect((await q.stats([E])).bytes).toBe(Buffer.byteLength('{"type":"user.online"}'));
      const [c] = await q.claim(E, Date.now(), 10, 10);
      await q.bury(c!, 'test');
      expect((await q.stats([E])).bytes).toBe(0);
      const { items } = await q.deadLetters(0, 10);
      expect(await q.retryDead(items[0]!.id)).toBe(true);
      expect((await q.stats([E])).bytes).toBe(Buffer.byteLength('{"type":"user.online"}'));
      const [again] = await q.claim(E, Date.now(), 10, 10);
      await q.ack(again!);
      expect((await q.stats([E])).bytes).toBe(0);
      // A discarded dead letter was already out of the count.
      await q.enqueue([E], 'user:h', held);
      const [third] = await q.claim(E, held.hold, 10, 10);
      await q.bury(third!, 'test');
      const letter = (await q.deadLetters(0, 1)).items[0]!;
      expect(await q.discardDead(letter.id)).toBe(true);
      expect((await q.stats([E])).bytes).toBe(0);
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
/** A node's Redis presence with no sockets of its own, queueing its transitions' webhook events through `hook`. */
function hookedPresence(
  client: Redis,
  names: RedisNames,
  hook: PresenceWebhooks,
  isPresenceChannel: (channel: string) => boolean,
): Presence {
  const local: LocalMembership = {
    stats: () => ({ sockets: 0, users: 0 }),
    connections: () => 0,
    sockets: () => 0,
    has: () => false,
    entries: () => [],
  };
  return createPresence({
    kind: 'redis',
    nodeId: 'n1',
    local,
    redis: client,
    names,
    ttlSeconds: 3,
    log,
    isPresenceChannel,
    maxInfoBytes: 1000,
    webhooks: hook,
  });
}

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
      () => {},
    );
    const ids = new EventIds();
    const p = hookedPresence(
      client,
      names,
      hook,
      presenceChannels((c) => c.startsWith('room:')),
    );
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

  it(`${kind}: presence events count against the byte bound: refused past it (the transition still happens), released on delivery, cancels and dead letters`, async () => {
    const client = await connect();
    clients.push(client);
    const names: RedisNames = redisNames(`wb${++prefixes}`);
    const maxBytes = 4000;
    const queue = new RedisWebhookQueue(client, names, { maxBytes, maxDeadLetters: 100, leaseMs: 5000 });
    const refused: string[] = [];
    const ids = new EventIds();
    const hook = queue.presenceHook(
      [E, 'w2'],
      ['user.online', 'user.offline', 'channel.occupied', 'channel.vacated'],
      60_000,
      () => ids.next(),
      (type, key, receiver) => refused.push(`${type} ${key} ${receiver}`),
    );
    const p = hookedPresence(client, names, hook, () => false);
    const keys = new Set<string>();
    p.onEvent((e) => {
      const key = 'channel' in e ? e.channel : `user:${e.user}`;
      keys.add(key);
      if (!queue.atomicDue) void queue.markDue([E, 'w2'], key);
    });
    const bytes = async () => Number((await client.get(names.webhookBytes)) ?? 0);
    // Clients cycling through unique channels while the receivers are away.
    // One join at a time: a Cluster node checks the room it last saw (its
    // own additions included), so joins in one flush could pass the bound.
    for (let i = 0; i < 40; i++) {
      await p.join(`chan-${i}`, `s${i}`, { user: `u${i}` });
      expect(await bytes()).toBeLessThanOrEqual(maxBytes);
    }
    // Every join happened (the clients are unaffected), most events were refused.
    expect(await p.count(['chan-0', 'chan-39'])).toEqual([1, 1]);
    await waitFor(() => refused.length > 0, { what: 'refusals' });
    expect(refused[0]).toMatch(/^channel\.occupied chan-\d+ [01]$/);
    const queued = async () => {
      let total = 0;
      for (const k of keys)
        for (const e of [E, 'w2'])
          for (const raw of await client.lrange(names.webhookQueue(k, e), 0, -1))
            total += Buffer.byteLength(raw.slice(raw.indexOf('\n', raw.indexOf('\n') + 1) + 1));
      return total;
    };
    await waitFor(async () => (await bytes()) === (await queued()), { what: 'count = queued bytes' });
    expect(await queued()).toBeLessThanOrEqual(maxBytes);
    // The receivers come back: what was accepted is delivered (w1) or
    // dead-lettered (w2), and the count returns to 0.
    const drain = async () => {
      for (;;) {
        const a = await queue.claim(E, Date.now(), 100, 100);
        const b = await queue.claim('w2', Date.now(), 100, 100);
        if (a.length + b.length === 0) break;
        for (const c of a) await queue.ack(c);
        for (const c of b) await queue.bury(c, 'gone');
      }
    };
    await drain();
    await waitFor(async () => (await bytes()) === 0, { what: 'count back to 0' });
    expect(await queued()).toBe(0);
    // Debounce: a held channel.vacated cancelled by the next occupied gives its bytes back.
    await p.join('chan-x', 'sx', { user: 'ux' });
    await p.leave('chan-x', 'sx');
    await waitFor(async () => (await client.llen(names.webhookQueue('chan-x', E))) === 2, {
      what: 'occupied and a held vacated',
    });
    await waitFor(async () => (await bytes()) === (await queued()), { what: 'both counted' });
    const both = await queued();
    await p.join('chan-x', 'sx2', { user: 'ux' });
    expect(await client.llen(names.webhookQueue('chan-x', E))).toBe(1);
    await waitFor(async () => (await bytes()) === (await queued()), {
      what: 'count = queued bytes after a cancel',
    });
    expect(await queued()).toBeLessThan(both);
    await drain();
    await waitFor(async () => (await bytes()) === 0, { what: 'count back to 0 after the cancel' });
    // With room again, events are accepted again.
    const before = refused.length;
    await p.join('chan-new', 'sn', { user: 'un' });
    await waitFor(async () => (await bytes()) > 0, { what: 'count added' });
    expect(refused.length).toBe(before);
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

  it('a node that finds a key leased by another looks again within a second, not at the lease’s end', async () => {
    // Its deferral can land after the holder's ack made the key due (two round trips racing): an event
    // queued behind that delivery then waited for the whole lease (CI: member.added 10 s late).
    const client = await ready(createRedis(new URL(redis.url), 'command', log));
    try {
      const names = redisNames(`wl${++prefixes}`);
      const [q1, q2] = [client, client].map((c) =>
        createWebhookQueue({ kind: 'redis', redis: c, names, leaseMs: 15_000, ...LIMITS }),
      ) as [WebhookQueue, WebhookQueue];
      await q1.enqueue([E], 'room:1', item('{"n":1}'));
      const [held] = await q1.claim(E, Date.now(), 10, 10);
      expect(held).toBeDefined();
      await q1.enqueue([E], 'room:1', item('{"n":2}'));
      const looked = Date.now();
      expect(await q2.claim(E, looked, 10, 10)).toEqual([]);
      const score = Number(await client.zscore(names.webhookDue(E), 'room:1'));
      expect(score).toBeLessThanOrEqual(looked + 1000);
      await q1.ack(held!);
      const [next] = await q2.claim(E, Date.now(), 10, 10);
      expect(jsons(next!.items)).toEqual(['{"n":2}']);
    } finally {
      client.disconnect();
    }
  });
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
