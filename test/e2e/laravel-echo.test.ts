import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, SCREENSHOTS } from '../helpers/browser.js';
import { READ_KEY } from '../helpers/env.js';
import { get, post } from '../helpers/http.js';
import { INGEST_SETTLED_MS } from '../helpers/ingest.js';
import {
  channelHas,
  type EchoClient,
  echoClient,
  type LaravelAuth,
  laravelBroadcast,
  SESSIONS,
  startLaravelAuth,
} from '../helpers/laravel.js';
import { scrape } from '../helpers/metrics.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { startTcpBalancer } from '../helpers/tcp-balancer.js';
import { sleep, waitFor } from '../helpers/wait.js';

// A Laravel app moved from laravel-echo-server to three pushrelay nodes
// without changing a line: its broadcasts come from Laravel's own
// RedisBroadcaster (Debian's php-laravel-framework), its browser is the
// laravel-echo package with socket.io-client, its /broadcasting/auth is
// Laravel's RedisBroadcaster::auth() behind a session and CSRF check.

const PREFIX = 'laravel_database_';
const APP = { id: 'shop', key: 'echo-client-key-0123456789abcdef' };
const SHIPPED = 'App\\Events\\OrderShipped';

describe('Laravel Echo across three nodes', () => {
  let redis: RedisServer;
  let auth: LaravelAuth;
  let nodes: RelayNode[] = [];
  let a: RelayNode;
  let b: RelayNode;
  let c: RelayNode;
  /** Past the last node's switch and its claim window: one node takes each Laravel channel, in order. */
  let settled = 0;
  const tabs: EchoClient[] = [];
  const tab = async (node: RelayNode, session?: { cookie: string; csrf: string }) => {
    const t = await echoClient(node.url, session);
    tabs.push(t);
    return t;
  };
  const has = (channel: string, n: number) => channelHas(a.url, channel, n, READ_KEY.secret);
  const broadcast = (o: Omit<Parameters<typeof laravelBroadcast>[0], 'port' | 'prefix'>) =>
    laravelBroadcast({ port: redis.port, prefix: PREFIX, ...o });

  beforeAll(async () => {
    redis = await startRedis();
    auth = await startLaravelAuth();
    const env = {
      REDIS_URL: redis.url,
      PUSHRELAY_ECHO: 'on',
      PUSHRELAY_ECHO_AUTH_URL: auth.url,
      PUSHRELAY_ECHO_REDIS_PREFIX: PREFIX,
      PUSHRELAY_ECHO_CLIENTS: `${APP.id}:${APP.key}`,
    };
    const tries = await Promise.allSettled([startProcess(env), startProcess(env), startProcess(env)]);
    nodes = tries.flatMap((t) => (t.status === 'fulfilled' ? [t.value] : []));
    for (const t of tries) if (t.status === 'rejected') throw t.reason;
    [a, b, c] = nodes as [RelayNode, RelayNode, RelayNode];
    await waitFor(async () => (await scrape(a.url)).value('pushrelay_ingest_members') === 3, {
      what: 'three ingest members',
    });
    settled = Date.now() + INGEST_SETTLED_MS;
  });
  afterAll(async () => {
    for (const t of tabs) t.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await auth?.stop();
    await redis?.stop();
  });

  it('delivers both Laravel Redis forms (EVAL and a plain PUBLISH) once to every Echo tab on every node; toOthers() skips the sender wherever it is', async () => {
    const [ta, tb, tc] = [await tab(a), await tab(b), await tab(c)];
    const got = [ta, tb, tc].map((t) => {
      const list: unknown[] = [];
      t.echo.channel('orders').listen('OrderShipped', (d: unknown) => list.push(d));
      return list;
    });
    await has('orders', 3);
    // Within a joining node's switch two nodes may each handle one of the three, and their order can mix.
    await sleep(settled - Date.now());
    await broadcast({ form: 'eval', event: SHIPPED, channels: ['orders'], data: { n: 1 } });
    await broadcast({ form: 'publish', event: SHIPPED, channels: ['orders'], data: { n: 2 } });
    await broadcast({ event: SHIPPED, channels: ['orders'], data: { n: 3 }, socket: ta.socketId()! });
    await waitFor(() => got[1]!.length === 3 && got[2]!.length === 3, { what: 'every tab' });
    await sleep(300);
    const socket = ta.socketId();
    for (const list of got.slice(1)) {
      expect(list).toEqual([
        { n: 1, socket: null },
        { n: 2, socket: null },
        { n: 3, socket },
      ]);
    }
    expect(got[0]).toEqual([
      { n: 1, socket: null },
      { n: 2, socket: null },
    ]);
  });

  it('authorizes private channels by the app on any node: the owner receives, another user gets subscription_error 403', async () => {
    const alice = await tab(b, SESSIONS.alice);
    const bob = await tab(c, SESSIONS.bob);
    const got: unknown[] = [];
    alice.echo.private('orders.1').listen('OrderShipped', (d: unknown) => got.push(d));
    bob.echo.private('orders.1').listen('OrderShipped', (d: unknown) => got.push(d));
    await waitFor(() => bob.errors.length === 1);
    expect(bob.errors).toEqual([['private-orders.1', 403]]);
    await has('private-orders.1', 1);
    // examples/laravel's event class, as the app broadcasts it.
    await broadcast({ form: 'example', event: '', channels: [], data: { id: 5, user_id: 1 } });
    await waitFor(() => got.length === 1);
    await sleep(200);
    expect(got).toEqual([{ order: { id: 5, user_id: 1 }, socket: null }]);
    expect(alice.errors).toEqual([]);
  });

  it('presence: two tabs of one user on two nodes join once, here() lists user_info, whispers reach the others, leaving once after the last tab', async () => {
    const events: string[] = [];
    const bob = await tab(c, SESSIONS.bob);
    let bobHere: unknown[] = [];
    const whispers: unknown[] = [];
    bob.echo
      .join('chat.1')
      .here((users: unknown[]) => {
        bobHere = users;
      })
      .joining((u: { name: string }) => events.push(`joining ${u.name}`))
      .leaving((u: { name: string }) => events.push(`leaving ${u.name}`))
      .listenForWhisper('typing', (d: unknown) => whispers.push(d));
    await waitFor(() => bobHere.length === 1);
    expect(bobHere).toEqual([SESSIONS.bob.info]);

    const tab1 = await tab(a, SESSIONS.alice);
    let here1: unknown[] = [];
    tab1.echo.join('chat.1').here((users: unknown[]) => {
      here1 = users;
    });
    await waitFor(() => events.length === 1);
    const tab2 = await tab(b, SESSIONS.alice);
    let here2: { name: string }[] = [];
    const tab2Events: string[] = [];
    tab2.echo
      .join('chat.1')
      .here((users: { name: string }[]) => {
        here2 = users;
      })
      .joining((u: { name: string }) => tab2Events.push(`joining ${u.name}`));
    await waitFor(() => here2.length === 2);
    expect(here2.map((u) => u.name).sort()).toEqual(['Alice', 'Bob']);
    expect(here1).toHaveLength(2);
    await sleep(300);
    // One joining for Alice's two tabs, and none to Alice's own tabs about herself.
    expect(events).toEqual(['joining Alice']);
    expect(tab2Events).toEqual([]);

    // laravel-echo-server's read routes, for the whole cluster, and the native presence route with user_info.
    const q = `auth_key=${APP.key}`;
    const users = await get<{ users: { id: number; user_info: unknown }[] }>(
      `${a.url}/apps/${APP.id}/channels/presence-chat.1/users?${q}`,
      { secret: '' },
    );
    expect(users.status).toBe(200);
    expect(users.body.users).toEqual([
      { id: 1, user_info: SESSIONS.alice.info },
      { id: 2, user_info: SESSIONS.bob.info },
    ]);
    const info = await get(`${b.url}/apps/${APP.id}/channels/presence-chat.1?${q}`, { secret: '' });
    expect(info.body).toEqual({ subscription_count: 3, occupied: true, user_count: 2 });
    const list = await get<{ channels: Record<string, unknown> }>(
      `${c.url}/apps/${APP.id}/channels?filter_by_prefix=presence-&${q}`,
      { secret: '' },
    );
    expect(list.body.channels).toEqual({ 'presence-chat.1': { subscription_count: 3, occupied: true } });
    const native = await get<{ users: { id: string; user_info: unknown }[] }>(
      `${c.url}/v1/channels/presence-chat.1/presence`,
      { secret: READ_KEY.secret },
    );
    expect(native.body.users.map((u) => [u.id, u.user_info])).toEqual([
      ['1', SESSIONS.alice.info],
      ['2', SESSIONS.bob.info],
    ]);

    // A whisper from node a reaches Bob on node c (and Alice's other tab), not the sender.
    const tab2Whispers: unknown[] = [];
    tab2.echo.join('chat.1').listenForWhisper('typing', (d: unknown) => tab2Whispers.push(d));
    const selfWhispers: unknown[] = [];
    tab1.echo.join('chat.1').listenForWhisper('typing', (d: unknown) => selfWhispers.push(d));
    tab1.echo.join('chat.1').whisper('typing', { name: 'Alice' });
    await waitFor(() => whispers.length === 1 && tab2Whispers.length === 1);
    await sleep(200);
    expect(whispers).toEqual([{ name: 'Alice' }]);
    expect(selfWhispers).toEqual([]);

    // One tab leaves the channel (Echo's unsubscribe), the user stays through the other.
    tab1.echo.leave('chat.1');
    await waitFor(async () => {
      const p = await get<{ sockets: number }>(`${a.url}/v1/channels/presence-chat.1/presence`, {
        secret: READ_KEY.secret,
      });
      return p.body.sockets === 2;
    });
    await sleep(300);
    expect(events).toEqual(['joining Alice']);
    tab2.close();
    await waitFor(() => events.length === 2);
    expect(events).toEqual(['joining Alice', 'leaving Alice']);
  });

  it('POST /apps/:appId/events publishes as laravel-echo-server did, with its errors typed', async () => {
    const t1 = await tab(a);
    const t2 = await tab(c);
    const got1: unknown[] = [];
    const got2: unknown[] = [];
    t1.echo.channel('news').listen('.headline', (d: unknown) => got1.push(d));
    t2.echo.channel('news').listen('.headline', (d: unknown) => got2.push(d));
    await has('news', 2);
    const url = `${b.url}/apps/${APP.id}/events`;
    // Any content type: the body is read as JSON; data as a JSON string is decoded.
    const ok = await post(
      url,
      JSON.stringify({ channel: 'news', name: 'headline', data: '{"title":"one"}' }),
      { secret: APP.key, contentType: 'text/plain' },
    );
    expect(ok).toMatchObject({ status: 200, body: { message: 'ok' } });
    await post(
      `${url}?auth_key=${APP.key}`,
      { channels: ['news'], name: 'headline', data: { title: 'two' }, socket_id: t1.socketId() },
      { secret: '' },
    );
    await waitFor(() => got2.length === 2);
    await sleep(200);
    expect(got2).toEqual([{ title: 'one' }, { title: 'two' }]);
    expect(got1).toEqual([{ title: 'one' }]);

    const missing = await post(url, { channel: 'news', name: 'x', data: {} }, { secret: '' });
    expect(missing.status).toBe(401);
    expect(missing.body).toMatchObject({ error: { code: 'unauthorized' } });
    const wrong = await post(url, { channel: 'news', name: 'x', data: {} }, { secret: 'nope' });
    expect(wrong.status).toBe(403);
    const other = await post(
      `${b.url}/apps/other/events`,
      { channel: 'news', name: 'x', data: {} },
      { secret: APP.key },
    );
    expect(other.status).toBe(403);
    for (const body of [
      { channel: 'news', data: {} },
      { name: 'x', data: {} },
      { channel: 'news', name: 'x' },
      'nope',
      '',
    ]) {
      const res = await post(url, typeof body === 'string' ? body : JSON.stringify(body), {
        secret: APP.key,
      });
      expect(res.status, JSON.stringify(body)).toBe(400);
    }
    const status = await get<{ subscription_count: number }>(
      `${a.url}/apps/${APP.id}/status?auth_key=${APP.key}`,
      {
        secret: '',
      },
    );
    expect(status.status).toBe(200);
    expect(status.body.subscription_count).toBeGreaterThanOrEqual(2);
  });

  it('an Echo tab that reconnects through the balancer to another node subscribes again there (the app asked again)', async () => {
    const lb = await startTcpBalancer([b.port]);
    try {
      const privateOk = async (node: RelayNode) =>
        (await scrape(node.url)).value('pushrelay_echo_subscriptions_total', {
          kind: 'private',
          outcome: 'ok',
        });
      const [onA, onB] = [await privateOk(a), await privateOk(b)];
      const alice = await tab({ url: lb.url } as RelayNode, SESSIONS.alice);
      const got: unknown[] = [];
      alice.echo.private('orders.1').listen('OrderShipped', (d: unknown) => got.push(d));
      await waitFor(async () => (await privateOk(b)) === onB + 1, { what: 'authorized on node b' });
      const firstId = alice.socketId();
      lb.use([a.port]);
      lb.cut();
      await waitFor(() => alice.socketId() !== undefined && alice.socketId() !== firstId, {
        what: 'a new socket',
      });
      await waitFor(async () => (await privateOk(a)) === onA + 1, { what: 'authorized again on node a' });
      await broadcast({ event: SHIPPED, channels: ['private-orders.1'], data: { again: true } });
      await waitFor(() => got.length === 1);
      expect(got).toEqual([{ again: true, socket: null }]);
      expect(alice.errors).toEqual([]);
    } finally {
      await lb.close();
    }
  });

  it('in Chromium: Echo’s browser build with the session cookie joins a presence channel and receives a private broadcast', async () => {
    const browser = await launchBrowser();
    try {
      // The page comes from the relay's origin, so the browser sends the app's session cookie with the
      // WebSocket upgrade, as it does when the relay sits on the app's domain.
      await browser.context.addCookies([{ name: 'laravel_session', value: 'session-alice', url: b.url }]);
      const page = await browser.context.newPage();
      await page.goto(`${b.url}/healthz`);
      await page.addScriptTag({ url: `${b.url}/socket.io/socket.io.min.js` });
      await page.addScriptTag({
        path: resolve(import.meta.dirname, '../../node_modules/laravel-echo/dist/echo.iife.js'),
      });
      const bob = await tab(c, SESSIONS.bob);
      const joined: string[] = [];
      bob.echo.join('chat.9').joining((u: { name: string }) => joined.push(u.name));
      await has('presence-chat.9', 1);
      await page.evaluate((host) => {
        const w = globalThis as unknown as Record<string, unknown>;
        const log: unknown[] = [];
        w.log = log;
        // resources/js/echo.js of examples/laravel, with the page's CSRF token.
        const EchoClass = (w.Echo as { default: new (o: unknown) => unknown }).default;
        const echo = new EchoClass({ broadcaster: 'socket.io', host, csrfToken: 'csrf-alice' }) as {
          join(c: string): { here(f: (u: unknown) => void): unknown };
          private(c: string): { listen(e: string, f: (d: unknown) => void): unknown };
        };
        echo.join('chat.9').here((users) => log.push({ here: users }));
        echo.private('orders.1').listen('OrderShipped', (d) => log.push({ shipped: d }));
      }, b.url);
      // Chromium loads, connects over polling, upgrades and the app authorizes: seconds on a busy machine.
      await waitFor(() => joined.length === 1, {
        what: 'Bob told that Alice joined from Chromium',
        timeoutMs: 30_000,
      });
      expect(joined).toEqual(['Alice']);
      await has('private-orders.1', 1);
      await broadcast({
        event: SHIPPED,
        channels: ['private-orders.1'],
        data: { id: 1, from: 'chromium test' },
      });
      const log = await waitFor(
        async () => {
          const l = (await page.evaluate(
            () => (globalThis as unknown as { log: unknown[] }).log,
          )) as unknown[];
          return l.length === 2 ? l : undefined;
        },
        { what: 'the page’s callbacks', timeoutMs: 30_000 },
      );
      expect(log).toContainEqual({ shipped: { id: 1, from: 'chromium test', socket: null } });
      const here = log.find((e) => (e as { here?: unknown }).here) as { here: { name: string }[] };
      expect(here.here.map((u) => u.name).sort()).toEqual(['Alice', 'Bob']);
      await page.screenshot({ path: `${SCREENSHOTS}/laravel-echo.png` });
    } finally {
      await browser.close();
    }
  });

  it('tells the channel leaving within seconds when the node holding a user’s only tab is SIGKILLed', async () => {
    const events: string[] = [];
    const bob = await tab(a, SESSIONS.bob);
    bob.echo
      .join('chat.2')
      .joining((u: { name: string }) => events.push(`joining ${u.name}`))
      .leaving((u: { name: string }) => events.push(`leaving ${u.name}`));
    await has('presence-chat.2', 1);
    const alice = await tab(c, SESSIONS.alice);
    alice.echo.join('chat.2');
    await waitFor(() => events.length === 1);
    await c.kill('SIGKILL');
    await waitFor(() => events.length === 2, { what: 'leaving after SIGKILL', timeoutMs: 15_000 });
    expect(events).toEqual(['joining Alice', 'leaving Alice']);
  });
});
