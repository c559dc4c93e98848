import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { get, post } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// With the advised `noeviction`, a Redis filled by keys nobody needs turns
// every publish into a 503. Subscribing to or reading channels nobody
// published to must leave nothing behind, and what a publish leaves must go
// away with the retention the operator set.

const HISTORY_TTL = 120;
const IDEMPOTENCY = 60;
const BATCH = 200;

describe('Redis holds nothing for channels nobody published to', () => {
  let redis: RedisServer;
  let client: Redis;
  let node: Awaited<ReturnType<typeof startInProcess>>;
  let socket: TestClient;

  beforeAll(async () => {
    redis = await startRedis();
    client = redis.client();
    node = await startInProcess({
      REDIS_URL: redis.url,
      PUSHRELAY_HISTORY_TTL_SECONDS: String(HISTORY_TTL),
      PUSHRELAY_IDEMPOTENCY_SECONDS: String(IDEMPOTENCY),
      PUSHRELAY_MAX_CHANNELS: String(BATCH),
      PUSHRELAY_SOCKET_RATE_LIMIT: '1000',
      PUSHRELAY_INGEST_PARTITIONS: '2',
    });
    socket = await connectClient(node.url, await token('cycler', { channels: ['room:*'] }));
  });

  afterAll(async () => {
    socket?.close();
    await node?.stop();
    await redis?.stop();
  });

  /** Keys that belong to channels (hash-tagged), leaving out node heartbeats and the like. */
  async function channelKeys(): Promise<string[]> {
    return (await client.keys('pushrelay:{room:*')).sort();
  }

  it('4,000 subscribe/unsubscribe cycles and history reads of fresh channels leave DBSIZE unchanged', async () => {
    // The node's own keys (heartbeat, ingest partitions and leases) are made in its first moments.
    await waitFor(
      async () => {
        const m = await scrape(node.url);
        return (
          m.value('pushrelay_ingest_partitions_owned') === 2 &&
          m.value('pushrelay_ingest_router_active') === 1 &&
          // The console's samples list is written from the second sample on (~2 intervals after start).
          (await client.exists(`pushrelay:stats:${node.relay.config.nodeId}`)) === 1
        );
      },
      { what: 'the node owning the ingest stream and keeping console samples', timeoutMs: 30_000 },
    );
    let before = new Set<string>();
    await waitFor(
      async () => {
        const now = new Set(await client.keys('*'));
        const stable = now.size === before.size && [...now].every((k) => before.has(k));
        before = now;
        if (!stable) await sleep(300);
        return stable;
      },
      { what: 'the node’s own keys in place' },
    );
    for (let round = 0; round < 4000 / BATCH; round++) {
      const channels = Array.from({ length: BATCH }, (_, i) => `room:fresh-${round}-${i}`);
      const answer = await socket.request<{ channels: Record<string, { offset: number; epoch: string }> }>(
        'subscribe',
        { channels },
      );
      expect(Object.keys(answer.channels)).toHaveLength(BATCH);
      expect(answer.channels[channels[0]!]).toEqual({ offset: 0, epoch: '0', recovered: false });
      await socket.request('unsubscribe', { channels });
    }
    for (let i = 0; i < 400; i++) {
      const res = await get<{ epoch: string; offset: number; messages: unknown[] }>(
        `${node.url}/v1/channels/room:read-${i}/history?since=0`,
      );
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ epoch: '0', offset: 0, messages: [] });
    }
    // Presence entries of the sockets that left are removed as they leave.
    await waitFor(async () => (await channelKeys()).length === 0, { what: 'no channel keys left' });
    const after = await client.keys('*');
    expect(after.filter((k) => !before.has(k))).toEqual([]);
    expect(await client.dbsize()).toBe(before.size);
  });

  it('a publish leaves keys that expire with the history TTL and the idempotency window', async () => {
    await socket.request('subscribe', { channels: ['room:busy'] });
    const res = await post<{ channels: Record<string, { offset: number; epoch: string }> }>(
      `${node.url}/v1/publish`,
      { event: 'hello', data: 1, channels: ['room:busy'], id: 'm-1' },
    );
    expect(res.status).toBe(200);
    const position = res.body.channels['room:busy']!;
    expect(position.offset).toBe(1);
    expect(position.epoch).not.toBe('0');
    // The subscriber that saw the channel unborn takes the new epoch without a resync.
    const [got] = await socket.waitForEvent('hello');
    expect(got!.meta).toMatchObject({ offset: 1, epoch: position.epoch });
    expect(socket.events('pushrelay:disconnect')).toHaveLength(0);

    const keys = await client.keys('pushrelay:*');
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) {
      const ttl = await client.ttl(key);
      if (key.startsWith('pushrelay:{room:busy}:')) {
        const bound = key.includes('}:i:') ? IDEMPOTENCY : HISTORY_TTL;
        if (key.endsWith('}:p') || key.endsWith('}:n') || key.endsWith('}:u')) continue; // presence: lives while the socket is there
        expect({ key, ttl: ttl > 0 && ttl <= bound }).toEqual({ key, ttl: true });
      } else if (key.startsWith('pushrelay:result:')) {
        expect({ key, ttl: ttl > 0 && ttl <= IDEMPOTENCY }).toEqual({ key, ttl: true });
      }
    }
    // Reading the channel does not extend its life.
    const ttlBefore = await client.pttl('pushrelay:{room:busy}:m');
    await sleep(50);
    await get(`${node.url}/v1/channels/room:busy/history?since=0`);
    expect(await client.pttl('pushrelay:{room:busy}:m')).toBeLessThanOrEqual(ttlBefore);
  });

  it('a client that saw a channel before its first publish recovers it from the start', async () => {
    const other = await connectClient(node.url, await token('late', { channels: ['room:*'] }));
    try {
      const answer = await other.request<{ channels: Record<string, { offset: number; epoch: string }> }>(
        'subscribe',
        { channels: ['room:later'] },
      );
      expect(answer.channels['room:later']).toMatchObject({ offset: 0, epoch: '0' });
      other.close();
      const res = await post<{ channels: Record<string, { offset: number; epoch: string }> }>(
        `${node.url}/v1/publish`,
        { event: 'missed', data: 7, channels: ['room:later'] },
      );
      expect(res.status).toBe(200);
      const back = await connectClient(node.url, await token('late', { channels: ['room:*'] }));
      try {
        const again = await back.request<{
          channels: Record<string, { offset: number; epoch: string; recovered: boolean }>;
        }>('subscribe', { channels: ['room:later'], since: { 'room:later': { offset: 0, epoch: '0' } } });
        expect(again.channels['room:later']).toEqual({
          offset: 1,
          epoch: res.body.channels['room:later']!.epoch,
          recovered: true,
        });
        const [got] = await back.waitForEvent('missed');
        expect(got!.data).toBe(7);
      } finally {
        back.close();
      }
    } finally {
      other.close();
    }
  });
});

describe('a channel whose retention ran out', () => {
  let redis: RedisServer;
  let client: Redis;
  let node: Awaited<ReturnType<typeof startInProcess>>;
  let socket: TestClient;

  beforeAll(async () => {
    redis = await startRedis();
    client = redis.client();
    node = await startInProcess({ REDIS_URL: redis.url, PUSHRELAY_HISTORY_TTL_SECONDS: '1' });
    socket = await connectClient(node.url, await token('quiet', { channels: ['room:*'] }));
  });

  afterAll(async () => {
    socket?.close();
    await node?.stop();
    await redis?.stop();
  });

  it('is gone from Redis after its history TTL, and its next publish reaches subscribers without a resync', async () => {
    await socket.request('subscribe', { channels: ['room:quiet'] });
    const first = await post<{ channels: Record<string, { offset: number; epoch: string }> }>(
      `${node.url}/v1/publish`,
      { event: 'tick', data: 1, channels: ['room:quiet'] },
    );
    await socket.waitForEvent('tick');
    await waitFor(
      async () => (await client.exists('pushrelay:{room:quiet}:m', 'pushrelay:{room:quiet}:s')) === 0,
      {
        what: 'the channel’s keys expired',
      },
    );
    const second = await post<{ channels: Record<string, { offset: number; epoch: string }> }>(
      `${node.url}/v1/publish`,
      { event: 'tick', data: 2, channels: ['room:quiet'] },
    );
    expect(second.body.channels['room:quiet']!.offset).toBe(1);
    expect(second.body.channels['room:quiet']!.epoch).not.toBe(first.body.channels['room:quiet']!.epoch);
    const ticks = await socket.waitForEvent('tick', 2);
    expect(ticks.map((t) => [t.data, t.meta!.offset, t.meta!.epoch])).toEqual([
      [1, 1, first.body.channels['room:quiet']!.epoch],
      [2, 1, second.body.channels['room:quiet']!.epoch],
    ]);
    await sleep(200);
    expect(socket.events('pushrelay:disconnect')).toHaveLength(0);
    expect(socket.socket.connected).toBe(true);
  });
});
