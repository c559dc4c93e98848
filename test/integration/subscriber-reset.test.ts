import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// Redis closes a subscriber connection that falls behind its pub/sub
// output-buffer limit (a burst of large messages), or an operator's CLIENT
// KILL does. Messages published meanwhile never reach the node over pub/sub:
// it must notice, say so, count it, and catch its sockets up from history.

const MESSAGES = 150;

describe('Redis dropping the subscriber connections', () => {
  let redis: RedisServer;
  let node: Awaited<ReturnType<typeof startInProcess>>;
  let client: TestClient;
  beforeAll(async () => {
    redis = await startRedis();
    node = await startInProcess({ REDIS_URL: redis.url });
    client = await connectClient(node.url, await token('watcher', { channels: ['burst'] }));
    await client.request('subscribe', { channels: ['burst'] });
  });
  afterAll(async () => {
    client?.close();
    await node?.stop();
    await redis?.stop();
  });

  it('is counted, and every message published around the drops still arrives once, in order', async () => {
    const admin = redis.client();
    const before = await scrape(node.url);
    expect(before.value('pushrelay_redis_subscriber_resets_total', { role: 'subscriber' })).toBe(0);
    let kills = 0;
    // Each drop finds the node's pub/sub connections up again (a drop while one is still
    // reconnecting is no new reset of it).
    const pubsubConnections = async () =>
      ((await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub')) as string).split('\n').filter((l) => l.trim())
        .length;
    const connections = await pubsubConnections();
    const allBack = () =>
      waitFor(async () => (await pubsubConnections()) >= connections, { what: 'pub/sub connections back' });
    for (let i = 0; i < MESSAGES; i++) {
      const res = await post(`${node.url}/v1/publish`, { event: 'n', channels: ['burst'], data: { i } });
      expect(res.status).toBe(200);
      if (i % 50 === 10) {
        // Every pub/sub connection of the node at once, as an output-buffer overflow does to one.
        await allBack();
        kills += Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'));
        await sleep(5);
      }
    }
    // The last messages go out while the connection is down, and nothing follows
    // them to reveal a gap: only the catch-up after the reconnect brings them.
    await allBack();
    kills += Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'));
    for (let i = MESSAGES; i < MESSAGES + 3; i++) {
      expect(
        (await post(`${node.url}/v1/publish`, { event: 'n', channels: ['burst'], data: { i } })).status,
      ).toBe(200);
    }
    expect(kills).toBeGreaterThanOrEqual(4);
    await client.waitForEvent('n', MESSAGES + 3, 20_000);
    await sleep(300);
    const got = client.events('n').map((e) => (e.data as { i: number }).i);
    expect(got).toEqual([...Array(MESSAGES + 3).keys()]);
    await waitFor(
      async () =>
        (await scrape(node.url)).value('pushrelay_redis_subscriber_resets_total', { role: 'subscriber' }) >=
        3,
      { what: 'three resets counted' },
    );
    const after = await scrape(node.url);
    for (const role of ['adapter', 'ingest']) {
      expect(after.value('pushrelay_redis_subscriber_resets_total', { role }), role).toBeGreaterThanOrEqual(
        3,
      );
    }
    expect(client.socket.connected).toBe(true);
  }, 60_000);
});
