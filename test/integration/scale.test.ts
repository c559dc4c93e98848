import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// What makes adding nodes cheap: a node receives from Redis only what is
// meant for its own sockets. Checked from both sides: the node's own
// pushrelay_redis_messages_received_total, and Redis's view of who is
// subscribed to what (PUBSUB).

const received = async (url: string, role: 'subscriber' | 'adapter') =>
  (await scrape(url)).value('pushrelay_redis_messages_received_total', { role });

describe('per-node cost on one Redis', () => {
  let redis: RedisServer;
  let prefixes = 0;
  const cleanup: (() => unknown)[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });
  afterAll(() => redis.stop());

  async function pair() {
    const prefix = `scale${++prefixes}`;
    const env = {
      REDIS_URL: redis.url,
      PUSHRELAY_PREFIX: prefix,
      PUSHRELAY_RATE_LIMIT: '0',
      PUSHRELAY_NAMESPACES: '{"room":{"presence":true,"public":true}}',
    };
    const a = await startInProcess(env);
    const b = await startInProcess(env);
    cleanup.push(() => Promise.all([a.stop(), b.stop()]));
    return { a, b, prefix };
  }

  async function client(url: string, user: string, channels: string[] = []): Promise<TestClient> {
    const c = await connectClient(url, await token(user, { channels }));
    cleanup.push(() => c.close());
    if (channels.length > 0) expect(await c.request('subscribe', { channels })).toMatchObject({ ok: true });
    return c;
  }

  it('sends a node nothing for users and channels it has no socket in', async () => {
    const { a, b, prefix } = await pair();
    const alice = await client(a.url, 'alice', ['news:a']);
    await client(b.url, 'bob', ['news:b']);
    const before = { a: await received(a.url, 'subscriber'), b: await received(b.url, 'subscriber') };

    for (let i = 0; i < 40; i++) {
      const res = await post(`${b.url}/v1/publish`, {
        event: 'tick',
        data: { i },
        ...(i % 2 === 0 ? { users: ['alice'] } : { channels: ['news:a'] }),
      });
      expect(res.status).toBe(200);
    }
    await alice.waitForEvent('tick', 40);
    await sleep(100);
    const after = { a: await received(a.url, 'subscriber'), b: await received(b.url, 'subscriber') };
    console.log('messages received for 40 publishes to node A’s sockets:', {
      a: after.a - before.a,
      b: after.b - before.b,
    });
    expect(after.a - before.a).toBe(40);
    // Node B took every publish over HTTP, and Redis sent it none of them.
    expect(after.b - before.b).toBe(0);

    const r = redis.client();
    const numsub = (await r.call(
      'PUBSUB',
      'NUMSUB',
      `${prefix}:{user:alice}:d`,
      `${prefix}:{news:a}:d`,
      `${prefix}:{user:bob}:d`,
    )) as (string | number)[];
    expect(numsub.filter((_, i) => i % 2 === 1)).toEqual([1, 1, 1]);
    // No pattern subscription: Redis does not match every PUBLISH against one per node.
    expect(await r.call('PUBSUB', 'NUMPAT')).toBe(0);
  });

  it('subscribes every node to the raw ingest channel on its own connection, apart from deliveries', async () => {
    const { a, b, prefix } = await pair();
    const r = redis.client();
    const ingestSubscribers = async () =>
      ((await r.call('PUBSUB', 'NUMSUB', `${prefix}:publish`)) as (string | number)[])[1];
    await waitFor(async () => (await ingestSubscribers()) === 2);
    const alice = await client(a.url, 'alice');
    const body = (n: number) => JSON.stringify({ event: 'raw', users: ['alice'], data: { n } });
    const before = { a: await received(a.url, 'subscriber'), b: await received(b.url, 'subscriber') };
    await waitFor(async () => {
      await r.publish(`${prefix}:publish`, body(1));
      return alice.events('raw').length > 0;
    });
    await sleep(100);
    // Raw ingest arrives on the 'ingest' connection; the delivery connection of node B still carries
    // nothing for a user it has no socket of.
    expect((await received(b.url, 'subscriber')) - before.b).toBe(0);
    expect((await received(a.url, 'subscriber')) - before.a).toBe(alice.events('raw').length);
    expect(
      (await scrape(b.url)).value('pushrelay_redis_messages_received_total', { role: 'ingest' }),
    ).toBeGreaterThan(0);
  });

  it('carries presence notices between nodes only to the nodes with sockets in the room', async () => {
    const { a, b, prefix } = await pair();
    const carol = await client(a.url, 'carol', ['room:1']);
    const adapterBefore = await received(b.url, 'adapter');
    await client(a.url, 'dan', ['room:1']); // a notice node B has no socket for
    await carol.waitForEvent('pushrelay:join', 1);
    await sleep(200);
    expect((await received(b.url, 'adapter')) - adapterBefore).toBe(0);

    await client(b.url, 'erin', ['room:1']); // from node B to carol on node A
    const joins = await carol.waitForEvent('pushrelay:join', 2);
    expect(joins.map((j) => (j.data as { user: string }).user)).toEqual(['dan', 'erin']);
    // The room's adapter channel is a sharded one, subscribed by the two nodes that have it.
    const r = redis.client();
    const shardNumsub = (await r.call('PUBSUB', 'SHARDNUMSUB', `${prefix}:sio#/#room:1#`)) as (
      | string
      | number
    )[];
    expect(shardNumsub[1]).toBe(2);
  });
});
