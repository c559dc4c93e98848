import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { KEY, token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { type RelayNode, startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep } from '../helpers/wait.js';

// A cluster publish without an id is written and counted in one step
// (Ingest.publishCounted); one with an id goes through the batch path. Both
// must answer the same, through the fast path and through Fastify.
describe('cluster publish answer', () => {
  let redis: RedisServer;
  let a: RelayNode;
  let b: RelayNode;
  const clients: TestClient[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    a = await startInProcess({ REDIS_URL: redis.url });
    b = await startInProcess({ REDIS_URL: redis.url });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  const connect = async (url: string, user: string, channels?: string[]) => {
    const c = await connectClient(url, await token(user, channels ? { channels } : {}));
    clients.push(c);
    if (channels) await c.request('subscribe', { channels });
    return c;
  };

  it('answers counts, offline users and positions as the batch path does, on either route', async () => {
    const alice1 = await connect(a.url, 'alice');
    await connect(b.url, 'alice');
    await connect(b.url, 'bob');
    await connect(a.url, 'carol', ['order:42', '__proto__']);
    const body = {
      event: 'bid',
      data: { amount: 120 },
      users: ['alice', 'bob', 'dave', 'alice', 'erin'],
      except_users: ['erin'],
      channels: ['order:42', '__proto__'],
    };
    const basic = `Basic ${Buffer.from(`${KEY.name}:${KEY.secret}`).toString('base64')}`;
    const answers = [
      await post(`${a.url}/v1/publish`, body),
      await post(`${a.url}/v1/publish`, body, { secret: '', headers: { authorization: basic } }),
      await post(`${a.url}/v1/publish`, { ...body, id: 'with-an-id' }),
    ];
    const targets = ['user:alice', 'user:bob', 'user:dave', 'order:42', '__proto__'];
    answers.forEach((res, i) => {
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.online).toEqual({ users: 2, sockets: 5 });
      expect(res.body.offline).toEqual(['dave']);
      const channels = res.body.channels as Record<string, { offset: number; epoch: string }>;
      expect(Object.keys(channels)).toEqual(targets);
      for (const t of targets) expect(channels[t]!.offset).toBe(i + 1);
    });
    expect(answers[2]!.body.id).toBe('with-an-id');
    const got = await alice1.waitForEvent('bid', 3);
    expect(got.map((e) => e.meta!.id)).toEqual(answers.map((r) => r.body.id));
  });

  it('delivers publishes made on both nodes at once to one channel once each, in offset order, on both nodes', async () => {
    // A node hands its own publishes to its sockets from the script's reply, before their copy
    // comes back through Redis; the other node's publishes to the channel come only as copies.
    const watchers = [await connect(a.url, 'wa', ['room:9']), await connect(b.url, 'wb', ['room:9'])];
    const ids: string[] = [];
    const send = async (url: string, k: number) => {
      const res = await post(`${url}/v1/publish`, { event: 'tick', data: { k }, channels: ['room:9'] });
      expect(res.status).toBe(200);
      ids.push(res.body.id as string);
    };
    for (let round = 0; round < 10; round++) {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) => send(i % 2 === 0 ? a.url : b.url, round * 40 + i)),
      );
    }
    for (const w of watchers) {
      const got = await w.waitForEvent('tick', 400);
      await sleep(200);
      const ticks = w.events('tick');
      expect(ticks.map((e) => e.meta!.offset)).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
      expect(new Set(got.map((e) => e.meta!.id))).toEqual(new Set(ids));
    }
    for (const n of [a, b]) {
      expect((await scrape(n.url)).value('pushrelay_delivery_duplicates_dropped_total')).toBe(0);
    }
  });

  it('counts the sockets of a node that has just joined', async () => {
    const c = await startInProcess({ REDIS_URL: redis.url });
    try {
      await connect(c.url, 'frank');
      // Node a may not have read c's heartbeat yet: then it asks Redis for the count.
      const res = await post(`${a.url}/v1/publish`, { event: 'hello', users: ['frank', 'gina'] });
      expect(res.status).toBe(200);
      expect(res.body.online).toEqual({ users: 1, sockets: 1 });
      expect(res.body.offline).toEqual(['gina']);
    } finally {
      await c.stop();
    }
  });
});
