import { Writable } from 'node:stream';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config/index.js';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { testEnv, token } from '../helpers/env.js';
import { INGEST_ACTIVE_MS } from '../helpers/ingest.js';
import { scrape } from '../helpers/metrics.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// Raw `PUBLISH <prefix>:publish` with several nodes in this process: every
// node is subscribed, each message is handled by exactly one of them (so the
// work spreads and none is a single point), a node that leaves hands its
// share over, and malformed messages are counted every time but logged at a
// bounded rate.

const published = async (url: string) =>
  (await scrape(url)).value('pushrelay_ingest_messages_total', { source: 'redis', outcome: 'published' });

describe('raw pub/sub ingest', () => {
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

  async function client(url: string, user: string): Promise<TestClient> {
    const c = await connectClient(url, await token(user));
    cleanup.push(() => c.close());
    return c;
  }

  it('every node subscribes; each message is handled by one node; the work is spread', async () => {
    const prefix = `ps${++prefixes}`;
    const env = { REDIS_URL: redis.url, PUSHRELAY_PREFIX: prefix, PUSHRELAY_RATE_LIMIT: '0' };
    const list = [await startInProcess(env), await startInProcess(env), await startInProcess(env)];
    cleanup.push(() => Promise.all(list.map((n) => n.stop())));
    // Every node is a subscriber of the channel, on its own ingest connection.
    const numsub = async () =>
      ((await r.call('PUBSUB', 'NUMSUB', `${prefix}:publish`)) as [string, number])[1];
    await waitFor(async () => (await numsub()) === 3);
    // A node starts handling its share once every node has seen it join (ACTIVATION_DELAY_MS).
    await waitFor(
      async () =>
        (await Promise.all(list.map((n) => scrape(n.url)))).every(
          (s) => s.value('pushrelay_ingest_members') === 3,
        ),
      {
        what: 'three members everywhere',
      },
    );
    await sleep(INGEST_ACTIVE_MS);
    const alice = await client(list[1]!.url, 'alice');
    const before = await Promise.all(list.map((n) => published(n.url)));
    const count = 300;
    for (let i = 0; i < count; i++) {
      await r.publish(`${prefix}:publish`, JSON.stringify({ event: 'raw', users: ['alice'], data: { i } }));
    }
    await alice.waitForEvent('raw', count);
    await sleep(300);
    const got = alice.events('raw').map((e) => (e.data as { i: number }).i);
    const twice = alice
      .events('raw')
      .filter(
        (e, k, all) =>
          all.findIndex((x) => (x.data as { i: number }).i === (e.data as { i: number }).i) !== k,
      );
    expect(twice.map((e) => ({ i: e.data, meta: e.meta }))).toEqual([]);
    expect(got.length).toBe(count);
    expect(new Set(got).size).toBe(count); // none twice
    const handled = (await Promise.all(list.map((n) => published(n.url)))).map((v, i) => v - before[i]!);
    console.log('raw messages handled per node:', handled);
    expect(handled.reduce((a, b) => a + b, 0)).toBe(count);
    for (const h of handled) expect(h).toBeGreaterThan(count / 10);
  });

  it('a node that leaves hands its share to the others: nothing published after it is lost', async () => {
    const prefix = `ps${++prefixes}`;
    const env = { REDIS_URL: redis.url, PUSHRELAY_PREFIX: prefix, PUSHRELAY_RATE_LIMIT: '0' };
    const a = await startInProcess(env);
    const b = await startInProcess(env);
    cleanup.push(() => Promise.all([a.stop(), b.stop()]));
    const bob = await client(a.url, 'bob');
    await sleep(INGEST_ACTIVE_MS); // b active
    await b.stop();
    // Published from the moment the close returned: a has taken b's share over (b left the set and kept
    // handling its share while a learnt it).
    for (let i = 0; i < 200; i++) {
      await r.publish(`${prefix}:publish`, JSON.stringify({ event: 'after', users: ['bob'], data: { i } }));
    }
    const events = await waitFor(
      () => (bob.events('after').length >= 200 ? bob.events('after') : undefined),
      {
        timeoutMs: 5000,
      },
    ).catch(() => bob.events('after'));
    expect(events.length).toBe(200);
  });

  it('absorbs a burst in its queue: none dropped, and the node stays active meanwhile', async () => {
    const prefix = `ps${++prefixes}`;
    const node = await startInProcess({
      REDIS_URL: redis.url,
      PUSHRELAY_PREFIX: prefix,
      PUSHRELAY_RATE_LIMIT: '0',
      PUSHRELAY_INGEST_MAX_INFLIGHT: '20000',
    });
    cleanup.push(() => node.stop());
    await waitFor(() => node.relay.sources.pubsub!.membership.member, { what: 'the node to join' });
    const count = 10_000;
    // Thousands handled at once used to starve the node's own heartbeat: its view of the member set went
    // stale and it dropped the rest of the burst as inactive.
    const p = r.pipeline();
    for (let i = 0; i < count; i++) {
      p.publish(`${prefix}:publish`, JSON.stringify({ event: 'burst', users: [`b${i % 500}`], data: { i } }));
    }
    await p.exec();
    const outcome = async () => {
      const m = await scrape(node.url);
      return {
        published: m.value('pushrelay_ingest_messages_total', { source: 'redis', outcome: 'published' }),
        dropped: m.value('pushrelay_ingest_messages_total', { source: 'redis', outcome: 'dropped' }),
      };
    };
    await waitFor(async () => (await outcome()).published + (await outcome()).dropped >= count, {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: 'the burst handled',
    });
    expect(await outcome()).toEqual({ published: count, dropped: 0 });
  }, 90_000);

  it('counts every malformed message but logs at most 5 lines per reason per 10 s (item 14)', async () => {
    const prefix = `ps${++prefixes}`;
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        done();
      },
    });
    const config = loadConfig(
      testEnv({ REDIS_URL: redis.url, PUSHRELAY_PREFIX: prefix, PUSHRELAY_NODE_ID: 'logged' }),
    );
    const relay = await buildApp(config, { logger: pino({ level: 'warn' }, sink) });
    cleanup.push(() => relay.close());
    await waitFor(() => relay.sources.pubsub!.membership.member, { what: 'the node to join' });
    await sleep(200);
    for (let i = 0; i < 500; i++) await r.publish(`${prefix}:publish`, `{"event": "x", "users": [${i}`);
    for (let i = 0; i < 300; i++)
      await r.publish(`${prefix}:publish`, JSON.stringify({ event: 'x', users: ['u'], extra: i }));
    const metrics = async () => {
      const text = await relay.metrics.registry.metrics();
      const count = (code: string) =>
        Number(
          new RegExp(`pushrelay_ingest_malformed_total\\{source="redis",code="${code}"\\} (\\d+)`).exec(
            text,
          )?.[1] ?? 0,
        );
      return { invalid_json: count('invalid_json'), invalid_body: count('invalid_body') };
    };
    await waitFor(async () => (await metrics()).invalid_body === 300, { what: 'every refusal counted' });
    expect(await metrics()).toEqual({ invalid_json: 500, invalid_body: 300 });
    const refusals = lines.filter((l) => l.includes('refused a redis ingest message'));
    console.log(
      'log lines for 800 malformed messages:',
      refusals.length,
      'bytes:',
      refusals.join('\n').length,
    );
    expect(refusals.length).toBe(10); // 5 per reason
    for (const l of refusals) expect(Buffer.byteLength(l)).toBeLessThan(600);
    expect(
      (await relay.metrics.registry.getSingleMetric('pushrelay_ingest_log_lines_suppressed_total')!.get())
        .values[0]?.value,
    ).toBe(790);
  });
});
