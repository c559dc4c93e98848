import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { KEY, token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

// A Redis that stops answering without closing its connections (SIGSTOP, a
// network black hole) must look as unavailable as one that is gone: readiness,
// the gauge, publishes and new sockets all say so within a few seconds.

/** Well above the relay's deadlines (2 s), well below what it took before (10 s for a publish, never for the rest). */
const NOTICE_MS = 6000;

describe('a hung Redis', () => {
  let redis: RedisServer;
  let node: Awaited<ReturnType<typeof startInProcess>>;
  let alice: TestClient;
  beforeAll(async () => {
    redis = await startRedis();
    node = await startInProcess({ REDIS_URL: redis.url });
    alice = await connectClient(node.url, await token('alice', { channels: ['news'] }));
    await alice.request('subscribe', { channels: ['news'] });
  });
  afterAll(async () => {
    alice?.close();
    redis?.resume();
    await node?.stop();
    await redis?.stop();
  });

  it('turns readiness, the gauge, publishes and new sockets to "unavailable", then recovers', async () => {
    const publish = () =>
      fetch(`${node.url}/v1/publish`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY.secret}` },
        body: JSON.stringify({ event: 'lost', channels: ['news'] }),
        signal: AbortSignal.timeout(NOTICE_MS),
      });
    redis.pause();
    // Sent before anything noticed: it waits for its command's deadline, not 10 s.
    const first = publish();
    await waitFor(async () => (await fetch(`${node.url}/readyz`)).status === 503, {
      what: 'readyz 503',
      timeoutMs: NOTICE_MS,
    });
    // Every connection's watchdog notices on its own.
    await waitFor(
      async () => {
        const metrics = await scrape(node.url);
        return ['command', 'subscriber', 'adapter', 'ingest'].every(
          (role) => metrics.value('pushrelay_redis_connected', { role }) === 0,
        );
      },
      { what: 'pushrelay_redis_connected 0 for every connection', timeoutMs: NOTICE_MS },
    );

    // A publish sent now is answered 503 at once, not left hanging for the publisher to time out.
    const res = await publish();
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unavailable');

    // A new socket gets an answer it can act on (socket.io-client retries it), not a hanging handshake.
    const refused = await fetch(`${node.url}/socket.io/?EIO=4&transport=polling`, {
      signal: AbortSignal.timeout(NOTICE_MS),
    });
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({ code: 4, message: 'Redis is unavailable; retry shortly' });
    expect(alice.socket.connected).toBe(true);

    const inFlight = await first;
    expect(inFlight.status).toBe(503);
    redis.resume();
    await waitFor(async () => (await fetch(`${node.url}/readyz`)).status === 200, {
      what: 'ready again',
      timeoutMs: 15_000,
    });
    expect((await scrape(node.url)).value('pushrelay_redis_connected', { role: 'command' })).toBe(1);
    expect((await post(`${node.url}/v1/publish`, { event: 'back', channels: ['news'] })).status).toBe(200);
    await alice.waitForEvent('back');
    const bob = await connectClient(node.url, await token('bob'));
    bob.close();
  }, 60_000);
});
