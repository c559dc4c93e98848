import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { READ_KEY, token } from '../helpers/env.js';
import { get } from '../helpers/http.js';
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
import { type RelayNode, startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// One node with an app that has no Redis prefix (PUSHRELAY_ECHO_REDIS_PREFIX
// set but empty), and everything a Laravel app or a hostile client can send
// that the relay must refuse without harm. The three-node behaviours are in
// test/e2e/laravel-echo.test.ts.

const SHIPPED = 'App\\Events\\OrderShipped';

describe('Laravel Echo on one node, no Redis prefix, bad input', () => {
  let redis: RedisServer;
  let r: Redis;
  let auth: LaravelAuth;
  let node: RelayNode;
  const clients: EchoClient[] = [];
  const tab = async (session?: { cookie: string; csrf: string }) => {
    const c = await echoClient(node.url, session);
    clients.push(c);
    return c;
  };
  const malformed = async (code: string) =>
    (await scrape(node.url)).value('pushrelay_ingest_malformed_total', { source: 'laravel', code });

  beforeAll(async () => {
    redis = await startRedis();
    r = redis.client();
    auth = await startLaravelAuth();
    node = await startInProcess({
      REDIS_URL: redis.url,
      PUSHRELAY_ECHO: 'on',
      PUSHRELAY_ECHO_AUTH_URL: auth.url,
      PUSHRELAY_ECHO_REDIS_PREFIX: '',
      PUSHRELAY_ECHO_AUTH_TIMEOUT_SECONDS: '2',
      PUSHRELAY_ECHO_AUTH_MAX_PER_SOCKET: '2',
      PUSHRELAY_ECHO_AUTH_MAX_INFLIGHT: '5',
      PUSHRELAY_ANYCABLE: 'on',
    });
    // The node takes raw pub/sub messages once it is an ingest member.
    await waitFor(async () => (await scrape(node.url)).value('pushrelay_ingest_members') === 1);
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await node?.stop();
    await auth?.stop();
    await redis?.stop();
  });

  it('delivers RedisBroadcaster’s bare-channel broadcasts to Echo listeners and native clients, and keeps them in history', async () => {
    const echo = await tab();
    const got: unknown[] = [];
    echo.echo.channel('orders').listen('OrderShipped', (data: unknown) => got.push(data));
    const native = await connectClient(node.url, await token('nat', { channels: ['orders'] }));
    await native.request('subscribe', { channels: ['orders'] });
    await channelHas(node.url, 'orders', 2, READ_KEY.secret);
    await laravelBroadcast({
      port: redis.port,
      prefix: '',
      event: SHIPPED,
      channels: ['orders'],
      data: { id: 7 },
    });
    await waitFor(() => got.length === 1, { what: 'the Echo listener' });
    // Unchanged, `socket` included, as laravel-echo-server delivers it.
    expect(got[0]).toEqual({ id: 7, socket: null });
    const [m] = await native.waitForEvent(SHIPPED);
    expect(m!.data).toEqual({ id: 7, socket: null });
    expect(m!.meta).toMatchObject({ channel: 'orders', offset: 1 });
    const history = await get<{ messages: { event: string; data: unknown }[] }>(
      `${node.url}/v1/channels/orders/history`,
      { secret: READ_KEY.secret },
    );
    expect(history.body.messages.map((e) => [e.event, e.data])).toEqual([[SHIPPED, { id: 7, socket: null }]]);
    native.close();
  });

  it('leaves the relay’s own and AnyCable’s channels alone even with an empty prefix, and counts malformed broadcasts', async () => {
    const echo = await tab();
    const got: unknown[] = [];
    echo.echo.channel('orders').listen('OrderShipped', (data: unknown) => got.push(data));
    await channelHas(node.url, 'orders', 2, READ_KEY.secret);
    const before = await scrape(node.url);
    await r.publish('pushrelay:publish', JSON.stringify({ event: 'x', channels: ['orders'], data: 1 }));
    await r.publish('__anycable__', JSON.stringify({ stream: 'orders', data: '2' }));
    const bad: [string, string][] = [
      ['orders', 'not json'],
      ['orders', '[1,2]'],
      ['orders', '{"data":{"id":1}}'],
      ['orders', '{"event":"connect","data":{}}'],
      ['orders', '{"event":"E"}'],
      ['orders', '{"event":"E","data":{},"socket":42}'],
      [`o${'x'.repeat(250)}`, '{"event":"E","data":{}}'],
      ['bad channel', '{"event":"E","data":{}}'],
      ['orders', `{"event":"E","data":${'['.repeat(100)}${']'.repeat(100)}}`],
    ];
    for (const [channel, text] of bad) await r.publish(channel, text);
    await laravelBroadcast({
      port: redis.port,
      prefix: '',
      event: SHIPPED,
      channels: ['orders'],
      data: { after: true },
    });
    await waitFor(() => got.length === 1, { what: 'the good broadcast after the bad ones' });
    expect(got).toEqual([{ after: true, socket: null }]);
    const after = await scrape(node.url);
    const delta = (code: string) =>
      after.value('pushrelay_ingest_malformed_total', { source: 'laravel', code }) -
      before.value('pushrelay_ingest_malformed_total', { source: 'laravel', code });
    expect(delta('invalid_json')).toBe(1);
    expect(delta('invalid_body')).toBe(3);
    expect(delta('invalid_event')).toBe(1);
    expect(delta('reserved_event')).toBe(1);
    expect(delta('invalid_channel')).toBe(2);
    expect(delta('too_deep')).toBe(1);
    // The raw publish and the AnyCable message went their own ways (one each), not through Laravel's.
    expect(
      after.value('pushrelay_ingest_messages_total', { source: 'laravel', outcome: 'published' }) -
        before.value('pushrelay_ingest_messages_total', { source: 'laravel', outcome: 'published' }),
    ).toBe(1);
    expect(await malformed('invalid_json')).toBeGreaterThan(0);
  });

  it('one presence model for both protocols: a native member and an Echo member see each other, each in its own shape', async () => {
    const native = await connectClient(
      node.url,
      await token('2', { channels: ['presence-chat.5'], userInfo: { id: 2, name: 'Bob (native)' } }),
    );
    await native.request('subscribe', { channels: ['presence-chat.5'] });
    const alice = await tab(SESSIONS.alice);
    let here: unknown[] = [];
    const leaving: unknown[] = [];
    alice.echo
      .join('chat.5')
      .here((users: unknown[]) => {
        here = users;
      })
      .leaving((u: unknown) => leaving.push(u));
    await waitFor(() => here.length === 2, { what: 'here() with the native member' });
    expect(here).toEqual([SESSIONS.alice.info, { id: 2, name: 'Bob (native)' }]);
    const [join] = await native.waitForEvent('pushrelay:join');
    expect(join!.data).toEqual({ channel: 'presence-chat.5', user: '1', user_info: SESSIONS.alice.info });
    native.close();
    await waitFor(() => leaving.length === 1);
    expect(leaving).toEqual([{ id: 2, name: 'Bob (native)' }]);
    // Neither got the other protocol's notices.
    expect(native.received.filter((e) => e.event.startsWith('presence:'))).toEqual([]);
    const socket = (alice.echo.connector as unknown as { socket: import('socket.io-client').Socket }).socket;
    const seen: string[] = [];
    socket.onAny((event: string) => seen.push(event));
    await laravelBroadcast({
      port: redis.port,
      prefix: '',
      event: 'ping',
      channels: ['presence-chat.5'],
      data: {},
    });
    await waitFor(() => seen.includes('ping'));
    expect(seen.filter((e) => e.startsWith('pushrelay:'))).toEqual([]);
  });

  it('toOthers(): the socket named in the broadcast does not get it, the others do', async () => {
    const sender = await tab();
    const other = await tab();
    const fromSender: unknown[] = [];
    const fromOther: unknown[] = [];
    sender.echo.channel('chat').listen('.said', (d: unknown) => fromSender.push(d));
    other.echo.channel('chat').listen('.said', (d: unknown) => fromOther.push(d));
    await channelHas(node.url, 'chat', 2, READ_KEY.secret);
    const socket = sender.socketId()!;
    await laravelBroadcast({
      port: redis.port,
      prefix: '',
      event: 'said',
      channels: ['chat'],
      data: { n: 1 },
      socket,
    });
    await laravelBroadcast({
      port: redis.port,
      prefix: '',
      event: 'said',
      channels: ['chat'],
      data: { n: 2 },
    });
    await waitFor(() => fromOther.length === 2 && fromSender.length === 1);
    expect(fromOther).toEqual([
      { n: 1, socket },
      { n: 2, socket: null },
    ]);
    expect(fromSender).toEqual([{ n: 2, socket: null }]);
  });

  it('refuses private channels as the app answers: 403 for another user’s channel, 419 without a session, 500 and garbage', async () => {
    const before = await scrape(node.url);
    const alice = await tab(SESSIONS.alice);
    const alice2 = await tab(SESSIONS.alice);
    const anonymous = await tab();
    const orders: unknown[] = [];
    alice.echo.private('orders.1').listen('OrderShipped', (d: unknown) => orders.push(d));
    alice.echo.private('orders.2');
    alice2.echo.private('fail.1');
    alice2.echo.private('garbage.1').listen('OrderShipped', (d: unknown) => orders.push(d));
    anonymous.echo.private('orders.1');
    await waitFor(() => alice.errors.length + alice2.errors.length === 3 && anonymous.errors.length === 1, {
      what: 'refusals',
    });
    // An answer larger than 64 KiB is not read to its end.
    alice.echo.private('huge.1');
    await waitFor(() => alice.errors.length + alice2.errors.length === 4, {
      what: 'the huge answer refused',
    });
    expect([...alice.errors, ...alice2.errors].sort()).toEqual([
      ['private-fail.1', 500],
      ['private-garbage.1', 0],
      ['private-huge.1', 0],
      ['private-orders.2', 403],
    ]);
    expect(anonymous.errors).toEqual([['private-orders.1', 419]]);
    await channelHas(node.url, 'private-orders.1', 1, READ_KEY.secret);
    await laravelBroadcast({
      port: redis.port,
      prefix: '',
      event: SHIPPED,
      channels: ['private-garbage.1', 'private-orders.1'],
      data: { id: 1 },
    });
    await waitFor(() => orders.length > 0);
    await sleep(200);
    expect(orders).toEqual([{ id: 1, socket: null }]);
    const after = await scrape(node.url);
    const delta = (outcome: string) =>
      after.value('pushrelay_echo_subscriptions_total', { kind: 'private', outcome }) -
      before.value('pushrelay_echo_subscriptions_total', { kind: 'private', outcome });
    expect(delta('auth_refused')).toBe(3);
    expect(delta('auth_garbage')).toBe(1);
    expect(delta('auth_failed')).toBe(1);
    expect(delta('ok')).toBe(1);
  });

  it('a hanging auth endpoint gives subscription_error 0 after the timeout, stalls nothing else, and is bounded per socket and per node', async () => {
    const before = await scrape(node.url);
    const [alice, bob, carol] = [
      await tab(SESSIONS.alice),
      await tab(SESSIONS.bob),
      await tab(SESSIONS.alice),
    ];
    const started = Date.now();
    // Sent together, seven calls meet PUSHRELAY_ECHO_AUTH_MAX_PER_SOCKET (2: Alice's third, if
    // it comes before the node is full) and PUSHRELAY_ECHO_AUTH_MAX_INFLIGHT (5): whatever order
    // they arrive in, five are made and two refused at once (429).
    for (const x of [1, 2, 3]) alice.echo.private(`hang.${x}`);
    for (const x of [4, 5]) bob.echo.private(`hang.${x}`);
    for (const x of [6, 7]) carol.echo.private(`hang.${x}`);
    const all = () => [...alice.errors, ...bob.errors, ...carol.errors];
    await waitFor(() => all().length === 2, { what: 'the flood refusals' });
    expect(all().map(([, s]) => s)).toEqual([429, 429]);
    expect((await scrape(node.url)).value('pushrelay_echo_auth_inflight')).toBe(5);
    // Meanwhile other subscriptions go through.
    const got: unknown[] = [];
    alice.echo.channel('news').listen('.n', (d: unknown) => got.push(d));
    await channelHas(node.url, 'news', 1, READ_KEY.secret);
    await laravelBroadcast({ port: redis.port, prefix: '', event: 'n', channels: ['news'], data: {} });
    await waitFor(() => got.length === 1, { what: 'a public channel while auth hangs' });
    await waitFor(() => all().length === 7, { what: 'the timeouts', timeoutMs: 10_000 });
    expect(all().filter(([, s]) => s === 0)).toHaveLength(5);
    // Not before the timeout (PUSHRELAY_ECHO_AUTH_TIMEOUT_SECONDS=2).
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    const after = await scrape(node.url);
    const delta = (outcome: string) =>
      after.value('pushrelay_echo_subscriptions_total', { kind: 'private', outcome }) -
      before.value('pushrelay_echo_subscriptions_total', { kind: 'private', outcome });
    expect(delta('auth_timeout')).toBe(5);
    expect(delta('auth_overloaded')).toBe(2);
    expect(after.value('pushrelay_echo_auth_inflight')).toBe(0);
  });

  it('refuses channel names beyond the limits, and a subscribe flood is rate limited', async () => {
    const c = await tab();
    const socket = (c.echo.connector as unknown as { socket: import('socket.io-client').Socket }).socket;
    socket.emit('subscribe', { channel: 'x'.repeat(201), auth: {} });
    socket.emit('subscribe', { channel: 'user:alice', auth: {} });
    socket.emit('subscribe', { channel: '$broadcast', auth: {} });
    // A pushrelay namespace that is not public stays behind its tokens.
    socket.emit('subscribe', { channel: 'order:42', auth: {} });
    socket.emit('subscribe', { nothing: true });
    socket.emit('subscribe', 'garbage');
    await waitFor(() => c.errors.length === 4);
    expect(c.errors.map(([ch, s]) => [ch.length, s])).toEqual([
      [200, 400],
      ['user:alice'.length, 400],
      ['$broadcast'.length, 400],
      ['order:42'.length, 403],
    ]);
    const before = (await scrape(node.url)).value('pushrelay_ratelimit_rejections_total', {
      scope: 'socket',
    });
    for (let i = 0; i < 200; i++) socket.emit('subscribe', { channel: `flood.${i}`, auth: {} });
    await waitFor(async () => {
      const m = await scrape(node.url);
      return m.value('pushrelay_ratelimit_rejections_total', { scope: 'socket' }) - before > 100;
    });
    expect(socket.connected).toBe(true);
    expect((await fetch(`${node.url}/healthz`)).status).toBe(200);
  });
});

describe('Laravel Echo on a standalone node (no Redis)', () => {
  let node: RelayNode;
  const tabs: EchoClient[] = [];
  const APP = { id: 'shop', key: 'standalone-echo-key' };
  beforeAll(async () => {
    node = await startInProcess({ PUSHRELAY_ECHO: 'on', PUSHRELAY_ECHO_CLIENTS: `${APP.id}:${APP.key}` });
  });
  afterAll(async () => {
    for (const t of tabs) t.close();
    await node?.stop();
  });

  it('serves Echo sockets, the HTTP API and its channel list from memory; private channels need an auth URL', async () => {
    const t = await echoClient(node.url);
    tabs.push(t);
    const got: unknown[] = [];
    t.echo.channel('news').listen('.headline', (d: unknown) => got.push(d));
    t.echo.private('orders.1');
    await waitFor(() => t.errors.length === 1);
    expect(t.errors).toEqual([['private-orders.1', 403]]);
    await channelHas(node.url, 'news', 1, READ_KEY.secret);
    const list = await get(`${node.url}/apps/${APP.id}/channels?auth_key=${APP.key}`, { secret: '' });
    expect(list.body).toEqual({ channels: { news: { subscription_count: 1, occupied: true } } });
    const res = await fetch(`${node.url}/apps/${APP.id}/events?auth_key=${APP.key}`, {
      method: 'POST',
      body: JSON.stringify({ channel: 'news', name: 'headline', data: { title: 'hi' } }),
    });
    expect(res.status).toBe(200);
    await waitFor(() => got.length === 1);
    expect(got).toEqual([{ title: 'hi' }]);
  });
});

describe('laravel-echo-server’s HTTP API under a flood', () => {
  let node: RelayNode;
  const APP = { id: 'shop', key: 'flood-echo-key' };
  beforeAll(async () => {
    node = await startInProcess({
      PUSHRELAY_ECHO: 'on',
      PUSHRELAY_ECHO_CLIENTS: `${APP.id}:${APP.key},other:other-echo-key`,
      PUSHRELAY_RATE_LIMIT: '3',
    });
  });
  afterAll(async () => {
    await node?.stop();
  });

  it('POST /apps/:appId/events is held to PUSHRELAY_RATE_LIMIT per app: 429 rate_limited with Retry-After', async () => {
    const send = (app: { id: string; key: string }) =>
      fetch(`${node.url}/apps/${app.id}/events?auth_key=${app.key}`, {
        method: 'POST',
        body: JSON.stringify({ channel: 'news', name: 'headline', data: { title: 'hi' } }),
      });
    for (let i = 0; i < 3; i++) expect((await send(APP)).status).toBe(200);
    const refused = await send(APP);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('rate_limited');
    // Another app has its own allowance.
    expect((await send({ id: 'other', key: 'other-echo-key' })).status).toBe(200);
  });

  it('POST /apps/:appId/events gets the publish route’s checks: channel count, event name', async () => {
    const send = (body: unknown) =>
      fetch(`${node.url}/apps/other/events?auth_key=other-echo-key`, {
        method: 'POST',
        body: JSON.stringify(body),
      });
    const many = Array.from({ length: 1001 }, (_, i) => `c${i}`);
    for (const body of [
      { channels: many, name: 'headline', data: {} },
      { channel: 'news', name: 'connect', data: {} },
    ]) {
      const res = await send(body);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toMatch(
        /invalid_body|reserved_event/,
      );
    }
  });
});
