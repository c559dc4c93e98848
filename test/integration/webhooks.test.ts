import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { type RedisClusterSetup, startRedisCluster } from '../helpers/cluster.js';
import { KEY, READ_KEY, token } from '../helpers/env.js';
import { get, post } from '../helpers/http.js';
import { channelHas, echoClient } from '../helpers/laravel.js';
import { scrape } from '../helpers/metrics.js';
import { type RelayNode, startInProcess } from '../helpers/nodes.js';
import { type Receiver, startReceiver } from '../helpers/receiver.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

const SECRET = 'lifecycle-webhook-secret-0123456789abcdef';
// Long enough for a reconnect on a loaded CI machine to fall inside it.
const DEBOUNCE_MS = 1500;
const PUBLISH_ONLY = { name: 'pub', secret: 'test-publish-only-secret-0123456789ab' };

/** Standalone: one node twice. Cluster: two nodes on one Redis (or on a Redis Cluster). */
function setup(mode: 'standalone' | 'cluster' | 'redis-cluster', env: Record<string, string> = {}) {
  const s = {} as {
    receiver: Receiver;
    a: RelayNode;
    b: RelayNode;
    redis?: RedisServer;
    redisCluster?: RedisClusterSetup;
  };
  beforeAll(async () => {
    s.receiver = await startReceiver(SECRET);
    if (mode === 'cluster') s.redis = await startRedis();
    if (mode === 'redis-cluster') s.redisCluster = await startRedisCluster();
    const nodeEnv = {
      REDIS_URL: s.redis?.url ?? s.redisCluster?.url,
      PUSHRELAY_WEBHOOKS: s.receiver.url,
      PUSHRELAY_WEBHOOK_SECRET: SECRET,
      PUSHRELAY_WEBHOOK_DEBOUNCE_SECONDS: String(DEBOUNCE_MS / 1000),
      PUSHRELAY_NAMESPACES: '{"room":{"presence":true}}',
      ...env,
    };
    s.a = await startInProcess(nodeEnv);
    s.b = mode === 'standalone' ? s.a : await startInProcess(nodeEnv);
  });
  afterAll(async () => {
    await s.a?.stop();
    if (s.b !== s.a) await s.b?.stop();
    await s.redis?.stop();
    await s.redisCluster?.stop();
    await s.receiver?.close();
  });
  return s;
}

describe.each(['standalone', 'cluster'] as const)('lifecycle webhooks (%s)', (mode) => {
  const s = setup(mode);

  it('two tabs on two nodes give one user.online; closing one gives nothing; the other one user.offline', async () => {
    const t = await token('wh-ann', { userInfo: { name: 'Ann' } });
    const tab1 = await connectClient(s.a.url, t);
    const tab2 = await connectClient(s.b.url, t);
    await waitFor(() => s.receiver.of('user.online', 'wh-ann').length === 1, { what: 'user.online' });
    tab1.close();
    await sleep(DEBOUNCE_MS + 700);
    expect(s.receiver.of('user.offline', 'wh-ann')).toHaveLength(0);
    tab2.close();
    await waitFor(() => s.receiver.of('user.offline', 'wh-ann').length === 1, { what: 'user.offline' });
    await sleep(300);
    const online = s.receiver.of('user.online', 'wh-ann');
    expect(online).toHaveLength(1);
    expect(online[0]).toMatchObject({ user_info: { name: 'Ann' }, node: expect.any(String) });
    expect(online[0]!.id).toEqual(expect.any(String));
    expect(online[0]!.ts).toBeGreaterThan(Date.now() - 60_000);
    expect(s.receiver.of('user.offline', 'wh-ann')).toHaveLength(1);
  });

  it('a reload within the debounce gives neither offline nor a second online', async () => {
    const t = await token('wh-bob');
    const first = await connectClient(s.a.url, t);
    await waitFor(() => s.receiver.of('user.online', 'wh-bob').length === 1);
    first.close();
    const again = await connectClient(s.b.url, t);
    await sleep(DEBOUNCE_MS + 800);
    expect(s.receiver.of('user.offline', 'wh-bob')).toHaveLength(0);
    expect(s.receiver.of('user.online', 'wh-bob')).toHaveLength(1);
    again.close();
    await waitFor(() => s.receiver.of('user.offline', 'wh-bob').length === 1);
  });

  it('channel.occupied/vacated for every channel, member.added/removed per user for presence channels, in order', async () => {
    const c1 = await connectClient(
      s.a.url,
      await token('wh-cat', { channels: ['room:*', 'order:*'], userInfo: { n: 1 } }),
    );
    const c2 = await connectClient(s.b.url, await token('wh-dan', { channels: ['room:*'] }));
    const c2b = await connectClient(s.a.url, await token('wh-dan', { channels: ['room:*'] }));
    await c1.request('subscribe', { channels: ['room:1', 'order:9'] });
    await c2.request('subscribe', { channels: ['room:1'] });
    await c2b.request('subscribe', { channels: ['room:1'] });
    await waitFor(() => s.receiver.of('member.added', 'room:1').length === 2);
    await c1.request('unsubscribe', { channels: ['room:1', 'order:9'] });
    c2.close();
    c2b.close();
    await waitFor(() => s.receiver.of('channel.vacated', 'room:1').length === 1);
    await waitFor(() => s.receiver.of('channel.vacated', 'order:9').length === 1);
    const room = s.receiver.events
      .filter((e) => e.channel === 'room:1')
      .map((e) => `${e.type}${e.user ? ` ${e.user}` : ''}`);
    expect(room).toEqual([
      'channel.occupied',
      'member.added wh-cat',
      'member.added wh-dan',
      'member.removed wh-cat',
      'member.removed wh-dan',
      'channel.vacated',
    ]);
    expect(
      s.receiver.events.find((e) => e.type === 'member.added' && e.user === 'wh-cat')?.user_info,
    ).toEqual({
      n: 1,
    });
    // Not a presence channel: no member events.
    expect(s.receiver.events.filter((e) => e.channel === 'order:9').map((e) => e.type)).toEqual([
      'channel.occupied',
      'channel.vacated',
    ]);
    c1.close();
  });

  it('message.undelivered names the offline users and the message', async () => {
    const online = await connectClient(s.a.url, await token('wh-eve'));
    const res = await post(`${s.b.url}/v1/publish`, {
      event: 'invoice',
      data: { n: 3 },
      users: ['wh-eve', 'wh-fay'],
    });
    expect(res.status).toBe(200);
    const [e] = await waitFor(() => {
      const found = s.receiver.of('message.undelivered');
      return found.length > 0 ? found : undefined;
    });
    expect(e).toMatchObject({
      users: ['wh-fay'],
      message: { id: res.body.id, event: 'invoice', data: { n: 3 } },
    });
    online.close();
  });

  it('sends several due events of a user in one call, and splits them at 1 MiB per call, in order', async () => {
    s.receiver.answer = 503;
    const blob = 'y'.repeat(60_000);
    for (let i = 0; i < 24; i++) {
      const res = await post(`${s.a.url}/v1/publish`, {
        event: `big-${i}`,
        data: { blob },
        users: ['wh-batch'],
      });
      expect(res.status).toBe(200);
    }
    await waitFor(() => s.receiver.calls.some((c) => c.status === 503 && c.body.includes('wh-batch')));
    s.receiver.answer = 200;
    const ours = () => s.receiver.of('message.undelivered').filter((e) => e.users?.includes('wh-batch'));
    await waitFor(() => new Set(ours().map((e) => e.id)).size === 24, {
      timeoutMs: 20_000,
      what: '24 events',
    });
    const unique = [...new Map(ours().map((e) => [e.id, e.message!.event])).values()];
    expect(unique).toEqual(Array.from({ length: 24 }, (_, i) => `big-${i}`));
    const calls = s.receiver.calls.filter((c) => c.status === 200 && c.body.includes('wh-batch'));
    const sizes = calls.map((c) => (JSON.parse(c.body) as { events: unknown[] }).events.length);
    expect(Math.max(...sizes)).toBeGreaterThan(1);
    for (const c of calls) expect(c.body.length).toBeLessThan(1024 * 1024 + 64 * 1024);
  });

  it('a receiver answering 503 gets every event later, in order per user, once it answers 2xx', async () => {
    s.receiver.answer = 503;
    const users = Array.from({ length: 10 }, (_, i) => `wh-down-${i}`);
    const clients: TestClient[] = [];
    for (const [i, u] of users.entries())
      clients.push(await connectClient(i % 2 ? s.a.url : s.b.url, await token(u)));
    for (const c of clients) c.close();
    await waitFor(() => s.receiver.calls.filter((c) => c.status === 503).length >= 3);
    s.receiver.answer = 200;
    await waitFor(() => users.every((u) => s.receiver.of('user.offline', u).length > 0), {
      timeoutMs: 20_000,
      what: 'every user.offline',
    });
    for (const u of users) {
      const mine = s.receiver.events.filter((e) => e.user === u);
      // Repeats (at-least-once) carry the same id; de-duplicated, the sequence is exact.
      const unique = [...new Map(mine.map((e) => [e.id, e.type])).values()];
      expect(unique).toEqual(['user.online', 'user.offline']);
    }
    const m = await scrape(s.a.url);
    expect(m.value('pushrelay_webhook_events_total', { outcome: 'retried' })).toBeGreaterThan(0);
  });
});

describe('lifecycle webhooks on a Redis Cluster', () => {
  const s = setup('redis-cluster');

  it('a user and a channel on two nodes: each transition once, in order', async () => {
    const t = await token('rc-ann', { channels: ['room:*'] });
    const tabs = [await connectClient(s.a.url, t), await connectClient(s.b.url, t)];
    for (const tab of tabs) await tab.request('subscribe', { channels: ['room:rc'] });
    await waitFor(() => s.receiver.of('member.added', 'room:rc').length === 1);
    for (const tab of tabs) tab.close();
    await waitFor(() => s.receiver.of('channel.vacated', 'room:rc').length === 1, { timeoutMs: 15_000 });
    await waitFor(() => s.receiver.of('user.offline', 'rc-ann').length === 1);
    await sleep(300);
    expect(s.receiver.events.filter((e) => e.user === 'rc-ann' && !e.channel).map((e) => e.type)).toEqual([
      'user.online',
      'user.offline',
    ]);
    expect(s.receiver.events.filter((e) => e.channel === 'room:rc').map((e) => e.type)).toEqual([
      'channel.occupied',
      'member.added',
      'member.removed',
      'channel.vacated',
    ]);
  });
});

describe('webhook dead letters and their admin routes', () => {
  const s = setup('cluster', {
    PUSHRELAY_WEBHOOK_RETRY_SECONDS: '1',
    PUSHRELAY_KEYS: `${KEY.name}:${KEY.secret},${READ_KEY.name}:${READ_KEY.secret}:read,${PUBLISH_ONLY.name}:${PUBLISH_ONLY.secret}:publish`,
  });

  it('are listed after retries run out, sent again on retry, discarded on delete; other scopes are refused', async () => {
    s.receiver.answer = 500;
    const c = await connectClient(s.a.url, await token('wh-dead'));
    await waitFor(async () => ((await get(`${s.a.url}/v1/webhooks/dead`)).body.total as number) > 0, {
      timeoutMs: 15_000,
      what: 'a dead letter',
    });
    const list = await get<{
      total: number;
      items: { id: string; events: { type: string; user: string }[]; endpoint: string }[];
    }>(`${s.b.url}/v1/webhooks/dead?limit=10`);
    const letter = list.body.items.find((d) => d.events.some((e) => e.user === 'wh-dead'))!;
    expect(letter.events[0]).toMatchObject({ type: 'user.online', user: 'wh-dead' });
    expect(letter.endpoint).toBe(new URL(s.receiver.url).origin);
    const status = await get<{ receivers: { dead_letters?: number }[]; dead_letters: number }>(
      `${s.a.url}/v1/webhooks`,
    );
    expect(status.body.dead_letters).toBeGreaterThan(0);
    // Counted by the node that gave up, whichever it was.
    const buried = await Promise.all(
      [s.a, s.b].map(async (n) =>
        (await scrape(n.url)).value('pushrelay_webhook_events_total', { outcome: 'dead_lettered' }),
      ),
    );
    expect(buried[0]! + buried[1]!).toBeGreaterThan(0);

    // Publish-only and read-only keys may not see or touch them.
    for (const secret of [PUBLISH_ONLY.secret, READ_KEY.secret]) {
      expect((await get(`${s.a.url}/v1/webhooks/dead`, { secret })).status).toBe(403);
      expect((await get(`${s.a.url}/v1/webhooks`, { secret })).status).toBe(403);
      const refused = await post(`${s.a.url}/v1/webhooks/dead/${letter.id}/retry`, undefined, { secret });
      expect(refused.status).toBe(403);
      expect(refused.body).toMatchObject({ error: { code: 'forbidden' } });
    }

    s.receiver.answer = 200;
    const retried = await post(`${s.a.url}/v1/webhooks/dead/${letter.id}/retry`, undefined);
    expect(retried.body).toEqual({ id: letter.id, retried: true });
    await waitFor(() => s.receiver.of('user.online', 'wh-dead').length === 1);
    const again = await post(`${s.a.url}/v1/webhooks/dead/${letter.id}/retry`, undefined);
    expect(again.status).toBe(404);
    expect(again.body).toMatchObject({ error: { code: 'dead_letter_not_found' } });

    s.receiver.answer = 500;
    c.close();
    const other = await waitFor(
      async () =>
        (
          await get<{ items: { id: string; events: { type: string }[] }[] }>(`${s.a.url}/v1/webhooks/dead`)
        ).body.items.find((d) => d.events.some((e) => e.type === 'user.offline')),
      { timeoutMs: 15_000, what: 'the user.offline dead letter' },
    );
    const anonymous = await fetch(`${s.a.url}/v1/webhooks/dead/${other.id}`, { method: 'DELETE' });
    expect(anonymous.status).toBe(401);
    const discarded = await fetch(`${s.a.url}/v1/webhooks/dead/${other.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${KEY.secret}` },
    });
    expect(await discarded.json()).toEqual({ id: other.id, discarded: true });
    const after = await get<{ items: { id: string }[] }>(`${s.a.url}/v1/webhooks/dead`);
    expect(after.body.items.map((d) => d.id)).not.toContain(other.id);
    s.receiver.answer = 200;
  });
});

describe.each(['standalone', 'cluster'] as const)('webhook queue bound in bytes (%s)', (mode) => {
  const BOUND = 1024 * 1024;
  const s = setup(mode, {
    PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES: String(BOUND),
    PUSHRELAY_WEBHOOK_TIMEOUT_SECONDS: '60',
    PUSHRELAY_RATE_LIMIT: '0',
  });

  it('a receiver that never answers and large publishes to offline users: queued bytes stay under the bound, the rest is refused and counted', async () => {
    s.receiver.answer = 'hang';
    const data = { blob: 'x'.repeat(60 * 1024) };
    for (let i = 0; i < 40; i++) {
      const res = await post(`${s.a.url}/v1/publish`, { event: 'big', data, users: [`wh-big-${i % 5}`] });
      expect(res.status).toBe(200);
    }
    await waitFor(
      async () => (await scrape(s.a.url)).value('pushrelay_webhook_events_total', { outcome: 'refused' }) > 0,
      {
        what: 'refusals',
      },
    );
    await sleep(2500); // the gauge is refreshed every 2 s
    const m = await scrape(s.a.url);
    const queued = m.value('pushrelay_webhook_queued_bytes');
    expect(queued).toBeGreaterThan(BOUND / 2);
    expect(queued).toBeLessThanOrEqual(BOUND);
    expect(m.value('pushrelay_webhook_events_total', { outcome: 'refused' })).toBeGreaterThanOrEqual(20);
    expect(
      m.value('pushrelay_webhook_events_total', { outcome: 'refused', type: 'message.undelivered' }),
    ).toBeGreaterThanOrEqual(20);
  });
});

describe('webhook configuration', () => {
  it('refuses a weak webhook secret in production', () => {
    const strong = 'q7Vd9Zk2mP4xW8rT1yL6nB3cH5jF0gSaE2uR';
    const production = {
      NODE_ENV: 'production',
      PUSHRELAY_KEYS: `app:${strong}`,
      PUSHRELAY_JWT_SECRET: strong,
      PUSHRELAY_CORS_ORIGINS: 'https://app.example.com',
      PUSHRELAY_WEBHOOKS: 'https://app.example.com/hooks',
    };
    expect(loadConfig({ ...production, PUSHRELAY_WEBHOOK_SECRET: SECRET }).webhooks).toHaveLength(1);
    expect(() => loadConfig({ ...production, PUSHRELAY_WEBHOOK_SECRET: 'a'.repeat(40) })).toThrow(
      /PUSHRELAY_WEBHOOK_SECRET: has fewer than 10 distinct characters/,
    );
  });

  it('refuses receivers without a secret, unknown event kinds and non-http URLs', () => {
    expect(() => loadConfig({ PUSHRELAY_WEBHOOKS: 'https://app.example/hook' })).toThrow(ConfigError);
    expect(() =>
      loadConfig({
        PUSHRELAY_WEBHOOKS: 'https://app.example/hook',
        PUSHRELAY_WEBHOOK_SECRET: SECRET,
        PUSHRELAY_WEBHOOK_EVENTS: 'user.online,user.gone',
      }),
    ).toThrow(/unknown event kind "user.gone"/);
    expect(() =>
      loadConfig({ PUSHRELAY_WEBHOOKS: 'ftp://app.example/hook', PUSHRELAY_WEBHOOK_SECRET: SECRET }),
    ).toThrow(/http: or https:/);
  });
});

describe.each(['standalone', 'cluster', 'redis-cluster'] as const)(
  'presence webhook events against the byte bound (%s)',
  (mode) => {
    const BOUND = 6000;
    const s = setup(mode, {
      PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES: String(BOUND),
      PUSHRELAY_WEBHOOK_TIMEOUT_SECONDS: '60',
      PUSHRELAY_RATE_LIMIT: '0',
    });
    const nodes = () => (s.a === s.b ? [s.a] : [s.a, s.b]);
    const total = async (outcome: string, type?: string) => {
      let n = 0;
      for (const node of nodes())
        n += (await scrape(node.url)).value('pushrelay_webhook_events_total', {
          outcome,
          ...(type ? { type } : {}),
        });
      return n;
    };
    const queuedBytes = async () =>
      (await get<{ queued_bytes: number }>(`${s.a.url}/v1/webhooks`)).body.queued_bytes;

    it('a receiver that hangs, clients cycling through unique channels and connecting/disconnecting: queued bytes stay under the bound, the rest is refused and counted; once it answers, the accepted events arrive in order and the count returns to 0', async () => {
      s.receiver.answer = 'hang';
      const seenBefore = new Set(s.receiver.events.map((e) => e.id));
      const cycler = await connectClient(s.a.url, await token('cy-ann', { channels: ['cyc:*'] }));
      let highest = 0;
      const watch = async () => {
        highest = Math.max(highest, await queuedBytes());
      };
      for (let i = 0; i < 50; i++) {
        await cycler.request('subscribe', { channels: [`cyc:${i}`] });
        await cycler.request('unsubscribe', { channels: [`cyc:${i}`] });
        if (i % 5 === 0) await watch();
      }
      for (let i = 0; i < 20; i++) {
        const c = await connectClient(i % 2 ? s.a.url : s.b.url, await token(`cy-u${i}`));
        c.close();
        await watch();
      }
      await waitFor(async () => (await total('refused')) > 0, { what: 'refusals' });
      await watch();
      // Counted by event type: the connections cycled last, so user events were refused.
      expect(
        (await total('refused', 'user.online')) + (await total('refused', 'user.offline')),
      ).toBeGreaterThan(0);
      // The clients were unaffected: every subscribe and connection went through.
      expect(highest).toBeGreaterThan(BOUND / 2);
      // One Redis and standalone: checked atomically with each transition. A
      // Redis Cluster: checked by the node against the count it last saw, so
      // another node's events of the same moment can pass it (README).
      expect(highest).toBeLessThanOrEqual(mode === 'redis-cluster' ? BOUND * 1.5 : BOUND);

      s.receiver.answer = 200;
      s.receiver.release(200);
      await waitFor(async () => (await queuedBytes()) === 0, {
        timeoutMs: 20_000,
        what: 'the queue drained and its count back to 0',
      });
      const queued = await total('queued');
      const fresh = s.receiver.events.filter((e) => !seenBefore.has(e.id));
      const unique = new Map(fresh.map((e) => [e.id, e]));
      // Every accepted event arrived (none refused did), each channel's in order.
      expect(unique.size).toBe(queued);
      for (let i = 0; i < 50; i++) {
        const types = [...unique.values()].filter((e) => e.channel === `cyc:${i}`).map((e) => e.type);
        expect(['', 'channel.occupied', 'channel.vacated', 'channel.occupied,channel.vacated']).toContain(
          types.join(','),
        );
      }
      cycler.close();
    });
  },
);

describe('presence webhook events from Laravel Echo sockets against the byte bound', () => {
  const BOUND = 4000;
  const s = setup('cluster', {
    PUSHRELAY_ECHO: 'on',
    // The per-socket limit slows such a client down; it does not bound the queue.
    PUSHRELAY_SOCKET_RATE_LIMIT: '1000',
    PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES: String(BOUND),
    PUSHRELAY_WEBHOOK_TIMEOUT_SECONDS: '60',
  });

  it('an anonymous Echo socket cycling through unique public channels while the receiver hangs fills the queue up to the bound and no further', async () => {
    s.receiver.answer = 'hang';
    const echo = await echoClient(s.a.url);
    const bytes = async () =>
      (await get<{ queued_bytes: number }>(`${s.a.url}/v1/webhooks`)).body.queued_bytes;
    let highest = 0;
    for (let i = 0; i < 40; i++) {
      echo.echo.channel(`pub-${i}`);
      await channelHas(s.a.url, `pub-${i}`, 1, READ_KEY.secret);
      echo.echo.leave(`pub-${i}`);
      highest = Math.max(highest, await bytes());
    }
    const refused = async () =>
      (await scrape(s.a.url)).value('pushrelay_webhook_events_total', {
        outcome: 'refused',
        type: 'channel.occupied',
      });
    await waitFor(async () => (await refused()) > 0, { what: 'channel.occupied refused' });
    expect(highest).toBeGreaterThan(BOUND / 2);
    expect(highest).toBeLessThanOrEqual(BOUND);
    expect(await bytes()).toBeLessThanOrEqual(BOUND);
    s.receiver.answer = 200;
    s.receiver.release(200);
    await waitFor(async () => (await bytes()) === 0, { timeoutMs: 20_000, what: 'the count back to 0' });
    echo.close();
  });
});
