import { type Logger, pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type Relay } from '../../src/app.js';
import { loadConfig } from '../../src/config/index.js';
import type { WebhookAdmin } from '../../src/http/admin-webhooks.js';
import { connectClient } from '../helpers/clients.js';
import { KEY, READ_KEY, testEnv, token } from '../helpers/env.js';
import { get, post } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';
import { deadDeliveries, ListWebhookAdmin } from '../helpers/webhook-admin.js';

// The routes the console stands on: per-node samples for the charts, the
// ingest stream's dead letters, and the webhook queue's (through the
// WebhookAdmin interface the webhook queue implements).

const PUBLISH_KEY = { name: 'pusher', secret: 'test-pusher-secret-0123456789abcdef' } as const;
const KEYS = `${KEY.name}:${KEY.secret},${READ_KEY.name}:${READ_KEY.secret}:read,${PUBLISH_KEY.name}:${PUBLISH_KEY.secret}:publish`;

type ErrorBody = { error: { code: string; message: string } };
type Sample = {
  ts: number;
  connections: number;
  publishes: Record<string, number>;
  deliveries: number;
  latency_p50_ms: number | null;
  latency_p99_ms: number | null;
  webhook_queue: number | null;
  draining: boolean;
  version: string;
};
type StatsBody = {
  node: string;
  mode: string;
  interval_ms: number;
  nodes: { id: string; version: string | null; draining: boolean; samples: Sample[] }[];
};
type DeadBody = {
  available: boolean;
  total: number;
  items: { id: string; ts: number; reason: string; entry: string; source: string; body: string }[];
  next_cursor: string | null;
};

let counter = 0;
async function start(
  env: Record<string, string> = {},
  webhookAdmin?: WebhookAdmin,
  logger?: Logger,
): Promise<{ relay: Relay; url: string }> {
  const config = loadConfig(
    testEnv({
      PUSHRELAY_NODE_ID: `c${process.pid}-${++counter}`,
      PUSHRELAY_KEYS: KEYS,
      PUSHRELAY_STATS_INTERVAL_SECONDS: '1',
      ...env,
    }),
  );
  const relay = await buildApp(config, {
    ...(webhookAdmin ? { webhookAdmin } : {}),
    ...(logger ? { logger } : {}),
  });
  await relay.http.listen({ port: 0, host: '127.0.0.1' });
  const { port } = relay.http.server.address() as { port: number };
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, { what: 'ready' });
  return { relay, url };
}

const ROUTES: [method: 'GET' | 'POST' | 'DELETE', path: string][] = [
  ['GET', '/v1/admin/stats'],
  ['GET', '/v1/admin/ingest/dead'],
  ['POST', '/v1/admin/ingest/dead/1-0/retry'],
  ['DELETE', '/v1/admin/ingest/dead/1-0'],
  ['GET', '/v1/admin/webhooks'],
  ['GET', '/v1/admin/webhooks/dead'],
  ['POST', '/v1/admin/webhooks/dead/w1/retry'],
  ['DELETE', '/v1/admin/webhooks/dead/w1'],
  ['POST', '/v1/channels/$broadcast/tail-token'],
];

async function call(
  url: string,
  method: string,
  secret: string,
): Promise<{ status: number; body: ErrorBody }> {
  const res = await fetch(url, { method, headers: secret ? { authorization: `Bearer ${secret}` } : {} });
  return { status: res.status, body: (await res.json()) as ErrorBody };
}

describe('console routes (standalone)', () => {
  let node: { relay: Relay; url: string };
  const webhooks = new ListWebhookAdmin();
  beforeAll(async () => {
    webhooks.dead = deadDeliveries(3);
    node = await start({}, webhooks);
  });
  afterAll(async () => {
    await node?.relay.close();
  });

  it.each(ROUTES)(
    '%s %s needs the admin scope: 401 without a key, 403 for a publish-only or read key',
    async (method, path) => {
      const none = await call(`${node.url}${path}`, method, '');
      expect(none.status).toBe(401);
      expect(none.body.error.code).toBe('unauthorized');
      for (const key of [PUBLISH_KEY, READ_KEY]) {
        const refused = await call(`${node.url}${path}`, method, key.secret);
        expect(refused.status).toBe(403);
        expect(refused.body.error.code).toBe('forbidden');
      }
    },
  );

  it('samples this node: connections, publishes by source, deliveries and latency', async () => {
    const alice = await connectClient(node.url, await token('alice'));
    const since = Date.now();
    for (let i = 0; i < 5; i++) await post(`${node.url}/v1/publish`, { event: 'x', users: ['alice'] });
    const body = await waitFor(
      async () => {
        const res = await get<StatsBody>(`${node.url}/v1/admin/stats?since=${since}`);
        const busy = res.body.nodes[0]?.samples.find((s) => (s.publishes.http ?? 0) > 0);
        return busy ? res.body : undefined;
      },
      { what: 'a sample with the publishes', timeoutMs: 10_000 },
    );
    expect(body).toMatchObject({ node: node.relay.config.nodeId, mode: 'standalone', interval_ms: 1000 });
    const [me] = body.nodes;
    expect(me).toMatchObject({ id: node.relay.config.nodeId, draining: false });
    expect(me!.version).toMatch(/^\d+\.\d+\.\d+/);
    const busy = me!.samples.find((s) => (s.publishes.http ?? 0) > 0)!;
    expect(busy.connections).toBe(1);
    expect(busy.deliveries).toBeGreaterThan(0);
    expect(busy.latency_p50_ms).not.toBeNull();
    expect(busy.latency_p99_ms!).toBeGreaterThanOrEqual(busy.latency_p50_ms!);
    // The webhook queue depth comes from WebhookAdmin.stats(): queued + retrying.
    expect(busy.webhook_queue).toBe(3);
    // Only samples newer than `since` come back.
    const later = await get<StatsBody>(`${node.url}/v1/admin/stats?since=${busy.ts}`);
    expect(later.body.nodes[0]!.samples.every((s) => s.ts > busy.ts)).toBe(true);
    alice.close();
  });

  it('refuses a malformed since', async () => {
    const res = await get<ErrorBody>(`${node.url}/v1/admin/stats?since=yesterday`);
    expect(res.status).toBe(400);
  });

  it('says the ingest stream needs Redis, and refuses its actions with not_found', async () => {
    const list = await get<DeadBody>(`${node.url}/v1/admin/ingest/dead`);
    expect(list.status).toBe(200);
    expect(list.body).toEqual({ available: false, total: 0, items: [], next_cursor: null });
    const retry = await post<ErrorBody>(`${node.url}/v1/admin/ingest/dead/1-0/retry`, undefined);
    expect(retry.status).toBe(404);
    expect(retry.body.error.message).toMatch(/need Redis/);
  });

  it('lists webhook queue depth and dead letters page by page; retries and discards them, counted', async () => {
    const stats = await get(`${node.url}/v1/admin/webhooks`);
    expect(stats.body).toEqual({
      configured: true,
      queued: 2,
      retrying: 1,
      dead: 3,
      receivers: [{ receiver: 'https://app.example/hooks', queued: 2, retrying: 1, dead: 3 }],
    });
    const first = await get<{ items: { id: string; last_error: string }[]; next_cursor: string | null }>(
      `${node.url}/v1/admin/webhooks/dead?limit=2`,
    );
    expect(first.body.items.map((d) => d.id)).toEqual(['w1', 'w2']);
    expect(first.body.items[0]!.last_error).toBe('HTTP 502');
    const second = await get<{ items: { id: string }[]; next_cursor: string | null }>(
      `${node.url}/v1/admin/webhooks/dead?limit=2&cursor=${first.body.next_cursor}`,
    );
    expect(second.body).toMatchObject({ items: [{ id: 'w3' }], next_cursor: null });

    expect((await post(`${node.url}/v1/admin/webhooks/dead/w2/retry`, undefined)).body).toEqual({
      id: 'w2',
      action: 'retry',
    });
    expect(webhooks.retried).toEqual(['w2']);
    const discard = await fetch(`${node.url}/v1/admin/webhooks/dead/w3`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${KEY.secret}` },
    });
    expect(discard.status).toBe(200);
    const again = await post<ErrorBody>(`${node.url}/v1/admin/webhooks/dead/w2/retry`, undefined);
    expect(again.status).toBe(404);
    expect(again.body.error.code).toBe('not_found');
    const m = await scrape(node.url);
    expect(m.value('pushrelay_console_actions_total', { action: 'retry', queue: 'webhooks' })).toBe(1);
    expect(m.value('pushrelay_console_actions_total', { action: 'discard', queue: 'webhooks' })).toBe(1);
  });

  it('answers 503, not a 500, when the webhook queue fails', async () => {
    const broken = new ListWebhookAdmin();
    broken.stats = async () => {
      throw new Error('connection lost');
    };
    const other = await start({}, broken);
    try {
      const res = await get<ErrorBody>(`${other.url}/v1/admin/webhooks`);
      expect(res.status).toBe(503);
      expect(res.body.error.code).toBe('unavailable');
    } finally {
      await other.relay.close();
    }
  });
});

describe('console routes without webhooks, on Redis', () => {
  let redis: RedisServer;
  let node: { relay: Relay; url: string };
  const prefix = 'consoletest';
  const logs: Record<string, unknown>[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
    node = await start({ REDIS_URL: redis.url, PUSHRELAY_PREFIX: prefix }, undefined, logger);
  });
  afterAll(async () => {
    await node?.relay.close();
    await redis?.stop();
  });

  it('says webhooks are not configured', async () => {
    expect((await get(`${node.url}/v1/admin/webhooks`)).body).toEqual({
      configured: false,
      queued: 0,
      retrying: 0,
      dead: 0,
      receivers: [],
    });
    expect((await get(`${node.url}/v1/admin/webhooks/dead`)).body).toEqual({
      configured: false,
      items: [],
      next_cursor: null,
    });
    const retry = await post<ErrorBody>(`${node.url}/v1/admin/webhooks/dead/w1/retry`, undefined);
    expect(retry.status).toBe(404);
    expect(retry.body.error.message).toMatch(/not configured/);
  });

  it('serves the samples of the cluster from Redis', async () => {
    const res = await waitFor(
      async () => {
        const r = await get<StatsBody>(`${node.url}/v1/admin/stats`);
        return r.body.nodes[0] && r.body.nodes[0].samples.length >= 2 ? r : undefined;
      },
      { what: 'two samples' },
    );
    expect(res.body.mode).toBe('cluster');
    const stored = await redis.client().lrange(`${prefix}:stats:${node.relay.config.nodeId}`, 0, -1);
    expect(stored.length).toBeGreaterThanOrEqual(2);
  });

  it('lists ingest dead letters newest first, page by page, and discards them', async () => {
    const r = redis.client();
    for (let i = 0; i < 3; i++) await r.xadd(`${prefix}:publish`, '*', 'body', `not json ${i}`);
    const all = await waitFor(
      async () => {
        const res = await get<DeadBody>(`${node.url}/v1/admin/ingest/dead`);
        return res.body.total >= 3 ? res.body : undefined;
      },
      { what: 'three dead letters' },
    );
    expect(all.items.map((d) => d.body)).toEqual(['not json 2', 'not json 1', 'not json 0']);
    expect(all.items[0]).toMatchObject({ reason: 'invalid_json', source: 'stream' });

    const first = await get<DeadBody>(`${node.url}/v1/admin/ingest/dead?limit=2`);
    expect(first.body.items.map((d) => d.body)).toEqual(['not json 2', 'not json 1']);
    const second = await get<DeadBody>(
      `${node.url}/v1/admin/ingest/dead?limit=2&cursor=${first.body.next_cursor}`,
    );
    expect(second.body.items.map((d) => d.body)).toEqual(['not json 0']);
    expect(second.body.next_cursor).toBeNull();

    const bad = await get<ErrorBody>(`${node.url}/v1/admin/ingest/dead?cursor=abc`);
    expect(bad.status).toBe(400);
    for (const limit of ['0', '101', 'ten']) {
      const res = await get<ErrorBody>(`${node.url}/v1/admin/ingest/dead?limit=${limit}`);
      expect(res.status).toBe(400);
    }

    const id = all.items[2]!.id;
    const del = await fetch(`${node.url}/v1/admin/ingest/dead/${id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${KEY.secret}` },
    });
    expect(del.status).toBe(200);
    const again = await fetch(`${node.url}/v1/admin/ingest/dead/${id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${KEY.secret}` },
    });
    expect(again.status).toBe(404);
    expect(await r.xlen(`${prefix}:publish:dead`)).toBe(2);
  });

  it('retries an ingest dead letter: its body goes back to the stream, once', async () => {
    const r = redis.client();
    const before = (await get<DeadBody>(`${node.url}/v1/admin/ingest/dead`)).body;
    const letter = before.items.find((d) => d.body === 'not json 2')!;
    const retried = await post<{ id: string; action: string; requeued_as: string }>(
      `${node.url}/v1/admin/ingest/dead/${letter.id}/retry`,
      undefined,
    );
    expect(retried.status).toBe(200);
    expect(retried.body).toMatchObject({ id: letter.id, action: 'retry' });
    // Still not JSON: the router dead-letters it again, as the entry it was re-queued as.
    const requeued = await waitFor(async () => {
      const res = await get<DeadBody>(`${node.url}/v1/admin/ingest/dead`);
      return res.body.items.find((d) => d.entry === retried.body.requeued_as);
    });
    expect(requeued.body).toBe('not json 2');
    expect(
      (await get<DeadBody>(`${node.url}/v1/admin/ingest/dead`)).body.items.some((d) => d.id === letter.id),
    ).toBe(false);
    // A second retry of the same letter finds nothing to re-queue.
    const twice = await post<ErrorBody>(`${node.url}/v1/admin/ingest/dead/${letter.id}/retry`, undefined);
    expect(twice.status).toBe(404);
    expect(await r.xlen(`${prefix}:publish:dead`)).toBe(2);
    const m = await scrape(node.url);
    expect(m.value('pushrelay_console_actions_total', { action: 'retry', queue: 'ingest' })).toBe(1);
    // Who did what is in the log, with the key's name.
    expect(logs.filter((l) => l.queue === 'ingest').map((l) => [l.msg, l.key, l.action])).toEqual([
      ['ingest dead letter: discard', 'app', 'discard'],
      ['ingest dead letter: retry', 'app', 'retry'],
    ]);
    expect(logs.find((l) => l.action === 'retry')).toMatchObject({
      id: letter.id,
      requeuedAs: retried.body.requeued_as,
    });
    expect(m.value('pushrelay_console_actions_total', { action: 'discard', queue: 'ingest' })).toBe(1);
  });

  it("retries an AnyCable dead letter onto AnyCable's stream, in its payload field", async () => {
    const other = await start({
      REDIS_URL: redis.url,
      PUSHRELAY_PREFIX: 'consoleanycable',
      PUSHRELAY_ANYCABLE: 'on',
      PUSHRELAY_ANYCABLE_CHANNEL: '__anycable_console__',
    });
    try {
      const r = redis.client();
      await r.xadd('__anycable_console__', '*', 'payload', 'not json either');
      const letter = await waitFor(async () => {
        const res = await get<DeadBody>(`${other.url}/v1/admin/ingest/dead`);
        return res.body.items.find((d) => d.source === 'anycable');
      });
      const retried = await post<{ requeued_as: string }>(
        `${other.url}/v1/admin/ingest/dead/${letter.id}/retry`,
        undefined,
      );
      expect(retried.status).toBe(200);
      // Still not JSON: AnyCable's pipeline dead-letters it again, as the entry it was re-queued as.
      const again = await waitFor(async () => {
        const res = await get<DeadBody>(`${other.url}/v1/admin/ingest/dead`);
        return res.body.items.find((d) => d.entry === retried.body.requeued_as);
      });
      expect(again).toMatchObject({ source: 'anycable', body: 'not json either' });
    } finally {
      await other.relay.close();
    }
  });

  it('refuses a dead-letter id that is not a stream id', async () => {
    const res = await post<ErrorBody>(`${node.url}/v1/admin/ingest/dead/..%2F..%2Fx/retry`, undefined);
    expect(res.status).toBe(400);
  });

  it('answers 503, not a 500, while Redis is away', async () => {
    await redis.kill();
    try {
      for (const path of ['/v1/admin/ingest/dead', '/v1/admin/stats']) {
        const res = await get<ErrorBody>(`${node.url}${path}`);
        expect(res.status).toBe(503);
        expect(res.body.error.code).toBe('unavailable');
      }
    } finally {
      await redis.restart();
    }
  });
});
