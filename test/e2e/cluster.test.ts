import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { READ_KEY, token } from '../helpers/env.js';
import { get, post } from '../helpers/http.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

const run = promisify(execFile);

// Three real relay processes on one real Redis.
describe('cluster of three nodes', () => {
  let redis: RedisServer;
  let a: RelayNode;
  let b: RelayNode;
  let c: RelayNode;
  beforeAll(async () => {
    redis = await startRedis();
    [a, b, c] = await Promise.all([
      startProcess({ REDIS_URL: redis.url }),
      startProcess({ REDIS_URL: redis.url }),
      startProcess({ REDIS_URL: redis.url }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([a, b, c].map((n) => n?.stop()));
    await redis?.stop();
  });

  it('delivers a POST to node A to a user connected to node C', async () => {
    const alice = await connectClient(c.url, await token('alice'));
    const res = await post(`${a.url}/v1/publish`, { event: 'bid', data: { amount: 120 }, users: ['alice'] });
    expect(res.status).toBe(200);
    expect(res.body.online).toEqual({ users: 1, sockets: 1 });
    const [got] = await alice.waitForEvent('bid');
    expect(got!.data).toEqual({ amount: 120 });
    expect(got!.meta).toMatchObject({ channel: 'user:alice', id: res.body.id });
    alice.close();
  });

  it('delivers a redis-cli PUBLISH on the ingest channel to clients on all three nodes', async () => {
    const clients = await Promise.all(
      [a, b, c].map(async (n, i) => {
        const client = await connectClient(n.url, await token(`reader${i}`, { channels: ['news'] }));
        await client.request('subscribe', { channels: ['news'] });
        return client;
      }),
    );
    const body = JSON.stringify({ event: 'headline', channels: ['news'], data: { title: 'hello' } });
    // The ingest lease is taken within a second of start; publish until a node holds it.
    await waitFor(async () => {
      await run('redis-cli', ['-p', String(redis.port), 'PUBLISH', 'pushrelay:publish', body]);
      await sleep(200);
      return clients.every((cl) => cl.events('headline').length > 0);
    });
    for (const cl of clients) {
      expect(cl.events('headline')[0]!.data).toEqual({ title: 'hello' });
      cl.close();
    }
  });

  it('reaches both tabs of a user on two nodes, once each', async () => {
    const tab1 = await connectClient(a.url, await token('bob'));
    const tab2 = await connectClient(b.url, await token('bob'), { transports: ['polling'] });
    const res = await post(`${c.url}/v1/publish`, { event: 'ping', users: ['bob'] });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.online).toEqual({ users: 1, sockets: 2 });
    await tab1.waitForEvent('ping');
    await tab2.waitForEvent('ping');
    await sleep(300);
    expect(tab1.events('ping')).toHaveLength(1);
    expect(tab2.events('ping')).toHaveLength(1);
    tab1.close();
    tab2.close();
  });

  it('answers the legacy route 404 for an offline user and 200 once the user connects to another node', async () => {
    const before = await post(`${a.url}/message/alert/carol`, { text: 'hi' });
    expect(before.status).toBe(404);
    expect((before.body as { error: { code: string } }).error.code).toBe('user_offline');
    const carol = await connectClient(c.url, await token('carol'));
    const after = await post(`${a.url}/message/alert/carol`, { text: 'hi' });
    expect(after.status).toBe(200);
    expect((await carol.waitForEvent('alert'))[0]!.data).toEqual({ text: 'hi' });
    carol.close();
  });

  it('stops counting the sockets of a SIGKILLed node within seconds', async () => {
    const dave1 = await connectClient(a.url, await token('dave'));
    const dave2 = await connectClient(c.url, await token('dave'));
    const presence = () => get(`${a.url}/v1/users/dave/presence`, { secret: READ_KEY.secret });
    expect((await presence()).body).toMatchObject({ online: true, sockets: 2 });
    await c.kill('SIGKILL');
    const killedAt = Date.now();
    await waitFor(async () => (await presence()).body.sockets === 1, { timeoutMs: 10_000 });
    const seconds = (Date.now() - killedAt) / 1000;
    expect(seconds).toBeLessThan(6); // one presence TTL (3 s in tests) plus a heartbeat
    const res = await post(`${b.url}/v1/publish`, { event: 'after', users: ['dave'] });
    expect(res.body.online).toEqual({ users: 1, sockets: 1 });
    await dave1.waitForEvent('after');
    dave1.close();
    dave2.close();
  });
});
