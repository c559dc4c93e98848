import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, connectError, type TestClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { type Scrape, scrape } from '../helpers/metrics.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const DRAIN_SECONDS = 3;

// One real node scraped over HTTP, as Prometheus would, while it goes through
// what an operator watches: clients coming and going, publishes from HTTP and
// Redis, a rate limit, Redis going away and back, and a SIGTERM drain. The
// tests run in order and share the node.
describe('/metrics', () => {
  let redis: RedisServer;
  let node: RelayNode;
  let first: Scrape;
  let ws: TestClient;
  let polling: TestClient;
  const others: RelayNode[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    node = await startProcess({
      REDIS_URL: redis.url,
      PUSHRELAY_RATE_LIMIT: '12',
      PUSHRELAY_DRAIN_SECONDS: String(DRAIN_SECONDS),
    });
    first = await scrape(node.url);
  });
  afterAll(async () => {
    ws?.close();
    polling?.close();
    await Promise.all([node, ...others].map((n) => n?.stop()));
    await redis?.stop();
  });

  it('exports the default process metrics', async () => {
    await sleep(200);
    const now = await scrape(node.url);
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'process_start_time_seconds',
      'nodejs_heap_size_used_bytes',
      'nodejs_eventloop_lag_p99_seconds',
    ]) {
      expect(now.has(name), name).toBe(true);
    }
    expect(now.value('process_cpu_seconds_total')).toBeGreaterThan(first.value('process_cpu_seconds_total'));
  });

  it('counts connections by transport, and connects by outcome', async () => {
    ws = await connectClient(node.url, await token('m-ws'), { transports: ['websocket'] });
    polling = await connectClient(node.url, await token('m-poll'), { transports: ['polling'] });
    const refused = await connectError(node.url, { token: 'not-a-token' });
    expect(refused.data?.code).toBe('token_invalid');
    const now = await scrape(node.url);
    expect(now.value('pushrelay_socket_connections', { transport: 'websocket' })).toBe(1);
    expect(now.value('pushrelay_socket_connections', { transport: 'polling' })).toBe(1);
    expect(now.value('pushrelay_socket_connects_total', { outcome: 'ok' })).toBe(2);
    expect(now.value('pushrelay_socket_connects_total', { outcome: 'token_invalid' })).toBe(1);
  });

  it('counts disconnects by reason', async () => {
    const leaving = await connectClient(node.url, await token('m-leaving'));
    leaving.close();
    const now = await waitFor(async () => {
      const s = await scrape(node.url);
      const gone = s.value('pushrelay_socket_disconnects_total', { reason: 'client namespace disconnect' });
      return gone === 1 ? s : undefined;
    });
    expect(now.value('pushrelay_socket_connections', { transport: 'websocket' })).toBe(1);
  });

  it('counts publishes by source and outcome, deliveries, and times them end to end', async () => {
    const before = await scrape(node.url);
    const res = await post(`${node.url}/v1/publish`, { event: 'bid', data: 1, users: ['m-ws', 'm-poll'] });
    expect(res.status).toBe(200);
    await ws.waitForEvent('bid');
    await polling.waitForEvent('bid');
    const refused = await post(`${node.url}/v1/publish`, { event: 'bid', data: 2 });
    expect(refused.status).toBe(400);
    // The ingest lease is taken within a second of start; publish until this node holds it.
    const body = JSON.stringify({ event: 'fromredis', users: ['m-ws'] });
    await waitFor(async () => {
      await run('redis-cli', ['-p', String(redis.port), 'PUBLISH', 'pushrelay:publish', body]);
      await sleep(200);
      return ws.events('fromredis').length > 0;
    });
    const now = await scrape(node.url);
    const grew = (name: string, labels = {}) => now.value(name, labels) - before.value(name, labels);
    expect(grew('pushrelay_publish_messages_total', { source: 'http', outcome: 'ok' })).toBe(1);
    expect(grew('pushrelay_publish_messages_total', { source: 'http', outcome: 'no_target' })).toBe(1);
    expect(
      grew('pushrelay_publish_messages_total', { source: 'redis', outcome: 'ok' }),
    ).toBeGreaterThanOrEqual(1);
    expect(grew('pushrelay_publish_duration_seconds_count', { source: 'http' })).toBe(1);
    // Two sockets for the HTTP publish, one (or more, while the lease was being taken) from Redis.
    expect(grew('pushrelay_delivery_messages_total')).toBeGreaterThanOrEqual(3);
    expect(grew('pushrelay_delivery_latency_seconds_count')).toBeGreaterThanOrEqual(3);
    expect(grew('pushrelay_ingest_lag_seconds_count')).toBeGreaterThanOrEqual(3);
    expect(now.value('pushrelay_delivery_latency_seconds_bucket', { le: '+Inf' })).toBe(
      now.value('pushrelay_delivery_latency_seconds_count'),
    );
  });

  it('counts rate-limit rejections', async () => {
    let status = 0;
    for (let i = 0; i < 20 && status !== 429; i++) {
      status = (await post(`${node.url}/v1/publish`, { event: 'flood', users: ['nobody'] })).status;
    }
    expect(status).toBe(429);
    const now = await scrape(node.url);
    expect(now.value('pushrelay_ratelimit_rejections_total', { scope: 'publisher' })).toBeGreaterThanOrEqual(
      1,
    );
    expect(now.value('pushrelay_http_errors_total', { code: 'rate_limited' })).toBeGreaterThanOrEqual(1);
  });

  it('shows each Redis connection going down and coming back', async () => {
    const roles = ['command', 'subscriber', 'adapter', 'ingest'];
    const up = await scrape(node.url);
    for (const role of roles) expect(up.value('pushrelay_redis_connected', { role }), role).toBe(1);
    await redis.kill();
    await waitFor(async () => {
      const s = await scrape(node.url);
      return roles.every((role) => s.value('pushrelay_redis_connected', { role }) === 0);
    });
    await redis.restart();
    await waitFor(
      async () => {
        const s = await scrape(node.url);
        return roles.every((role) => s.value('pushrelay_redis_connected', { role }) === 1);
      },
      { timeoutMs: 15_000 },
    );
    await waitFor(async () => (await fetch(`${node.url}/readyz`)).status === 200);
  });

  it('shows drain progress on SIGTERM, spreading the disconnects over the drain period', async () => {
    // A node of its own: Redis coming back empty makes the first node tell its sockets to resync, which
    // would race with the drain.
    const drainer = await startProcess({
      REDIS_URL: redis.url,
      PUSHRELAY_DRAIN_SECONDS: String(DRAIN_SECONDS),
    });
    others.push(drainer);
    const clients = await Promise.all(
      ['m-d1', 'm-d2', 'm-d3'].map(async (user, i) =>
        connectClient(drainer.url, await token(user), { transports: [i === 0 ? 'polling' : 'websocket'] }),
      ),
    );
    const toldAt: number[] = [];
    for (const c of clients) {
      c.socket.on('pushrelay:disconnect', (notice: { reason: string }) => {
        if (notice.reason === 'draining') toldAt.push(Date.now());
      });
    }
    const before = await scrape(drainer.url);
    expect(before.value('pushrelay_drain_active')).toBe(0);
    expect(before.value('pushrelay_drain_sockets_remaining')).toBe(0);

    const exited = drainer.kill('SIGTERM');
    const remaining: number[] = [];
    let active = 0;
    let refusedWhileDraining: Error | undefined;
    let last: Scrape | undefined;
    const sentAt = Date.now();
    for (;;) {
      let s: Scrape;
      try {
        s = await scrape(drainer.url);
      } catch {
        break; // the node closed its HTTP server: the drain is over
      }
      last = s;
      active = Math.max(active, s.value('pushrelay_drain_active'));
      const r = s.value('pushrelay_drain_sockets_remaining');
      if (remaining.at(-1) !== r) remaining.push(r);
      if (!refusedWhileDraining && active === 1) {
        refusedWhileDraining = await connectError(drainer.url, { token: await token('m-late') });
      }
      await sleep(100);
    }
    expect(await exited).toBe(0);
    expect(active).toBe(1);
    // Three sockets spread over the period: the scrapes saw every step down.
    expect(remaining.filter((r) => r > 0)).toEqual([2, 1]);
    expect(remaining.at(-1)).toBe(0);
    expect(toldAt).toHaveLength(3);
    expect(Math.max(...toldAt) - Math.min(...toldAt)).toBeGreaterThanOrEqual(DRAIN_SECONDS * 1000 * 0.5);
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(DRAIN_SECONDS * 1000);
    expect(refusedWhileDraining).toBeDefined();
    expect(last!.value('pushrelay_socket_disconnects_total', { reason: 'draining' })).toBe(3);
    expect(last!.value('pushrelay_socket_connects_total', { outcome: 'draining' })).toBeGreaterThanOrEqual(1);
    for (const c of clients) c.close();
  });
});
