import { generateKeyPairSync } from 'node:crypto';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerAssetRoutes } from '../../src/http/assets.js';
import { registerErrorHandlers } from '../../src/http/errors.js';
import type { HttpApp } from '../../src/http/types.js';
import { createMetrics } from '../../src/metrics/index.js';
import { mintToken } from '../../src/realtime/mint.js';
import { connectClient, connectError } from '../helpers/clients.js';
import { JWT_SECRET, READ_KEY, token } from '../helpers/env.js';
import { get, post } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

// The routes the console stands on: the node list, the admin tail token, and
// the files the relay serves (browser bundle, console).

type Node = Awaited<ReturnType<typeof startInProcess>>;
type NodesBody = {
  node: string;
  mode: string;
  nodes: {
    id: string;
    sockets: number;
    users: number;
    connections: number;
    publishes: number;
    deliveries: number;
  }[];
};
type ErrorBody = { error: { code: string; message: string } };

describe('operator routes (standalone)', () => {
  let node: Node;
  beforeAll(async () => {
    node = await startInProcess();
  });
  afterAll(async () => {
    await node.stop();
  });

  it('lists this node with its sockets and running totals', async () => {
    const alice = await connectClient(node.url, await token('alice'));
    await post(`${node.url}/v1/publish`, { event: 'x', users: ['alice'] });
    await alice.waitForEvent('x');
    const res = await get<NodesBody>(`${node.url}/v1/nodes`);
    expect(res.status).toBe(200);
    expect(res.body.node).toBe(node.id);
    expect(res.body.mode).toBe('standalone');
    expect(res.body.nodes).toHaveLength(1);
    const n = res.body.nodes[0]!;
    expect(n).toMatchObject({ id: node.id, sockets: 1, users: 1 });
    expect(n.connections).toBeGreaterThanOrEqual(1);
    expect(n.publishes).toBeGreaterThanOrEqual(1);
    expect(n.deliveries).toBeGreaterThanOrEqual(1);
    alice.close();
  });

  it('refuses the node list without credentials, and to a key without the admin scope', async () => {
    const none = await get<ErrorBody>(`${node.url}/v1/nodes`, { secret: '' });
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe('unauthorized');
    const reader = await get<ErrorBody>(`${node.url}/v1/nodes`, { secret: READ_KEY.secret });
    expect(reader.status).toBe(403);
    expect(reader.body.error).toEqual({
      code: 'forbidden',
      message: 'key "reader" does not have the "admin" scope this route needs',
    });
  });

  it('mints an admin a short-lived token that can watch exactly one channel', async () => {
    const res = await post<{ token: string; user: string; channel: string; expiresAt: number }>(
      `${node.url}/v1/channels/${encodeURIComponent('order:42')}/tail-token`,
      undefined,
    );
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ user: 'console@app', channel: 'order:42' });
    const ttl = res.body.expiresAt - Date.now() / 1000;
    expect(ttl).toBeGreaterThan(290);
    expect(ttl).toBeLessThanOrEqual(300);
    const watcher = await connectClient(node.url, res.body.token);
    expect(watcher.connected.user).toBe('console@app');
    expect(await watcher.request('subscribe', { channels: ['order:42'] })).toMatchObject({ ok: true });
    expect(await watcher.request('subscribe', { channels: ['order:43'] })).toMatchObject({
      ok: false,
      error: { code: 'channel_not_allowed' },
    });
    await post(`${node.url}/v1/publish`, { event: 'bid', data: 7, channels: ['order:42'] });
    expect((await watcher.waitForEvent('bid'))[0]!.data).toBe(7);
    watcher.close();
  });

  it("watches a user's own channel without the user counting as online", async () => {
    const res = await post<{ token: string; channel: string }>(
      `${node.url}/v1/channels/${encodeURIComponent('user:dora')}/tail-token`,
      undefined,
    );
    expect(res.status).toBe(200);
    expect(res.body.channel).toBe('user:dora');
    const watcher = await connectClient(node.url, res.body.token);
    expect(Object.keys(watcher.connected.channels).sort()).toEqual([
      '$broadcast',
      'user:console@app',
      'user:dora',
    ]);
    const presence = await get<{ online: boolean }>(`${node.url}/v1/users/dora/presence`);
    expect(presence.body.online).toBe(false);
    await post(`${node.url}/v1/publish`, { event: 'invoice', data: 1, users: ['dora'] });
    const [got] = await watcher.waitForEvent('invoice');
    expect(got!.meta?.channel).toBe('user:dora');
    // With dora online too, both get it; she leaves, the watcher still gets her messages.
    const dora = await connectClient(node.url, await token('dora'));
    await post(`${node.url}/v1/publish`, { event: 'invoice', data: 2, users: ['dora'] });
    await dora.waitForEvent('invoice');
    await watcher.waitForEvent('invoice', 2);
    dora.close();
    await waitFor(
      async () => !(await get<{ online: boolean }>(`${node.url}/v1/users/dora/presence`)).body.online,
    );
    await post(`${node.url}/v1/publish`, { event: 'invoice', data: 3, users: ['dora'] });
    expect((await watcher.waitForEvent('invoice', 3)).map((e) => e.data)).toEqual([1, 2, 3]);
    // The console refreshes its short-lived tail token before it expires: the watch goes on.
    const again = await post<{ token: string }>(
      `${node.url}/v1/channels/${encodeURIComponent('user:dora')}/tail-token`,
      undefined,
    );
    expect(await watcher.request<{ ok: boolean }>('refresh', { token: again.body.token })).toMatchObject({
      ok: true,
    });
    await post(`${node.url}/v1/publish`, { event: 'invoice', data: 4, users: ['dora'] });
    expect((await watcher.waitForEvent('invoice', 4)).map((e) => e.data)).toEqual([1, 2, 3, 4]);
    watcher.close();
  });

  it('refuses a client token whose watch claim is not a user channel', async () => {
    const bad = await mintToken(JWT_SECRET, 'eve', { watch: 'order:42' });
    const err = await connectError(node.url, { token: bad });
    expect(err.data?.code).toBe('token_invalid');
  });

  it('refuses tail tokens to non-admin keys, for user channels and for invalid names', async () => {
    const url = (c: string) => `${node.url}/v1/channels/${encodeURIComponent(c)}/tail-token`;
    const reader = await post<ErrorBody>(url('order:42'), undefined, { secret: READ_KEY.secret });
    expect([reader.status, reader.body.error.code]).toEqual([403, 'forbidden']);
    const anonymous = await post<ErrorBody>(url('order:42'), undefined, { secret: '' });
    expect([anonymous.status, anonymous.body.error.code]).toEqual([401, 'unauthorized']);
    const own = await post<ErrorBody>(url('user:not a user'), undefined);
    expect([own.status, own.body.error.code]).toEqual([400, 'invalid_user']);
    const bad = await post<ErrorBody>(url('order 42'), undefined);
    expect([bad.status, bad.body.error.code]).toEqual([400, 'invalid_channel']);
  });

  it('serves the browser bundle to any origin, revalidated by ETag', async () => {
    const res = await fetch(`${node.url}/client/pushrelay.min.js`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(await res.text()).toContain('PushRelay');
    const etag = res.headers.get('etag')!;
    const again = await fetch(`${node.url}/client/pushrelay.min.js`, { headers: { 'if-none-match': etag } });
    expect(again.status).toBe(304);
  });

  it('serves the console under /console/ with headers that keep it from being framed', async () => {
    const redirect = await fetch(`${node.url}/console`, { redirect: 'manual' });
    expect(redirect.status).toBe(302);
    expect(redirect.headers.get('location')).toBe('console/');
    const page = await fetch(`${node.url}/console/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(await page.text()).toContain('<script src="console.js"></script>');
    for (const file of ['console.js', 'console.css']) {
      expect((await fetch(`${node.url}/console/${file}`)).status).toBe(200);
    }
    const other = await fetch(`${node.url}/console/../package.json`);
    expect(other.status).toBe(404);
  });
});

describe('operator routes, configured otherwise', () => {
  const nodes: Node[] = [];
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const n of nodes) await n.stop();
    await redis.stop();
  });

  it('does not serve the console when PUSHRELAY_CONSOLE=off, but still the browser bundle', async () => {
    const node = await startInProcess({ PUSHRELAY_CONSOLE: 'off' });
    nodes.push(node);
    const page = await fetch(`${node.url}/console/`);
    expect(page.status).toBe(404);
    expect(((await page.json()) as ErrorBody).error.code).toBe('not_found');
    expect((await fetch(`${node.url}/console`)).status).toBe(404);
    expect((await fetch(`${node.url}/client/pushrelay.min.js`)).status).toBe(200);
  });

  it('says why there is no tail when tokens are verified by a public key', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const node = await startInProcess({ PUSHRELAY_JWT_SECRET: undefined, PUSHRELAY_JWT_PUBLIC_KEY: pem });
    nodes.push(node);
    const res = await post<ErrorBody>(`${node.url}/v1/channels/order:1/tail-token`, undefined);
    expect(res.status).toBe(404);
    expect(res.body.error.message).toContain('PUSHRELAY_JWT_SECRET');
  });

  it('lists every live node of a cluster, and forgets a node that stopped', async () => {
    const env = { REDIS_URL: redis.url };
    const a = await startInProcess(env);
    const b = await startInProcess(env);
    nodes.push(a, b);
    const ids = async () => (await get<NodesBody>(`${a.url}/v1/nodes`)).body.nodes.map((n) => n.id);
    await waitFor(async () => (await ids()).length === 2);
    expect(await ids()).toEqual([a.id, b.id].sort());
    const client = await connectClient(b.url, await token('bob'));
    // Counts travel with the heartbeat (a third of the presence TTL).
    await waitFor(
      async () =>
        (await get<NodesBody>(`${a.url}/v1/nodes`)).body.nodes.find((n) => n.id === b.id)?.sockets === 1,
    );
    client.close();
    await b.stop();
    await waitFor(async () => (await ids()).length === 1);
    expect(await ids()).toEqual([a.id]);
  });

  it('answers 404 naming the build step when the files were not built', async () => {
    const app = Fastify() as unknown as HttpApp;
    registerErrorHandlers(app, createMetrics(), 1024);
    registerAssetRoutes(app, { console: true, dir: '/nonexistent-pushrelay-dist' });
    const res = await app.inject({ url: '/console/' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({
      error: { code: 'not_found', message: '/console/ is not built: run npm run build' },
    });
    await app.close();
  });

  it('refuses a connection with a tail token once it has expired', async () => {
    const node = await startInProcess();
    nodes.push(node);
    const expired = await token('console@app', { channels: ['order:1'], ttlSeconds: -10 });
    expect((await connectError(node.url, { token: expired })).data?.code).toBe('token_expired');
  });
});
