import { afterEach, describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

type SubAnswer = {
  ok: boolean;
  channels: Record<string, { offset: number; epoch: string; recovered: boolean }>;
};

describe('Redis outage', () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function cluster(options: Parameters<typeof startRedis>[0] = {}): Promise<{
    redis: RedisServer;
    node: Awaited<ReturnType<typeof startInProcess>>;
  }> {
    const redis = await startRedis(options);
    cleanup.push(() => redis.stop());
    const node = await startInProcess({ REDIS_URL: redis.url });
    cleanup.push(() => node.stop());
    return { redis, node };
  }

  it('answers 503 with Retry-After while Redis is down, keeps sockets, and recovers by itself', async () => {
    // Persistence that loses nothing acknowledged (README): with everysec the
    // epochs created a moment before the kill may be lost, and sockets are
    // then rightly told to resync.
    const { redis, node } = await cluster({ appendonly: true, appendfsync: 'always' });
    const alice = await connectClient(node.url, await token('alice', { channels: ['news'] }));
    await alice.request('subscribe', { channels: ['news'] });
    await redis.kill();
    await waitFor(async () => (await fetch(`${node.url}/readyz`)).status === 503);
    const ready = await fetch(`${node.url}/readyz`);
    expect(await ready.json()).toEqual({
      error: { code: 'unavailable', message: 'Redis is unavailable; retry shortly' },
    });
    const res = await post(`${node.url}/v1/publish`, { event: 'x', channels: ['news'] });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(res.body).toEqual({
      error: { code: 'unavailable', message: 'Redis is unavailable; retry shortly' },
    });
    expect((await fetch(`${node.url}/healthz`)).status).toBe(200); // alive, just not ready
    await sleep(500);
    expect(alice.socket.connected).toBe(true);

    await redis.restart();
    await waitFor(async () => (await fetch(`${node.url}/readyz`)).status === 200, { timeoutMs: 15_000 });
    expect((await post(`${node.url}/v1/publish`, { event: 'back', channels: ['news'] })).status).toBe(200);
    await alice.waitForEvent('back');
    // The ingest subscription came back too.
    const pub = redis.client();
    await waitFor(async () => {
      await pub.publish('pushrelay:publish', JSON.stringify({ event: 'raw', channels: ['news'] }));
      return alice.events('raw').length > 0;
    });
    expect(alice.socket.connected).toBe(true);
    // Presence was written again after the outage, without a member list for
    // the broadcast channel (everyone is in it; it is counted from node totals).
    await waitFor(async () => (await pub.exists('pushrelay:{user:alice}:p')) === 1);
    expect(await pub.exists('pushrelay:{$broadcast}:p')).toBe(0);
    alice.close();
  });

  it('detects a Redis that came back without writes it had acknowledged, and tells clients instead of dropping messages', async () => {
    const { redis, node } = await cluster();
    const carol = await connectClient(node.url, await token('carol', { channels: ['news'] }), {
      reconnection: true,
    });
    await carol.request('subscribe', { channels: ['news'] });
    for (let i = 1; i <= 5; i++)
      await post(`${node.url}/v1/publish`, { event: 'm', data: i, channels: ['news'] });
    await carol.waitForEvent('m', 5);
    const last = carol.events('m').at(-1)!.meta!;
    // What an AOF with fsync everysec can leave after a crash: the last two
    // writes gone, and two other messages published since under the same offsets.
    const r = redis.client();
    const names = { stream: 'pushrelay:{news}:s', meta: 'pushrelay:{news}:m' };
    await r.xdel(names.stream, '4-0', '5-0');
    await r.call('XSETID', names.stream, '3-0');
    await r.hset(names.meta, 's', 3);
    for (const n of [4, 5]) {
      const payload = JSON.stringify({ i: `other-${n}`, e: 'm', t: Date.now(), d: `other ${n}` });
      await r.xadd(names.stream, `${n}-0`, 't', Date.now(), 'p', payload);
    }
    await r.hset(names.meta, 's', 5);
    // The node's subscription drops and comes back, as it would across a restart.
    await r.client('KILL', 'TYPE', 'pubsub');
    const [notice] = await carol.waitForEvent('pushrelay:disconnect', 1, 15_000);
    expect(notice!.data).toMatchObject({ reason: 'resync', reconnect: true });
    await carol.waitForEvent('pushrelay:connected', 2, 10_000); // reconnected, not merely not yet closed
    const answer = await carol.request<SubAnswer>('subscribe', {
      channels: ['news'],
      since: { news: { offset: last.offset, epoch: last.epoch } },
    });
    expect(answer.channels.news).toMatchObject({ offset: 5, recovered: false });
    expect(answer.channels.news!.epoch).not.toBe(last.epoch);
    // New messages are delivered, not dropped as duplicates of offsets already seen.
    await post(`${node.url}/v1/publish`, { event: 'after', data: 6, channels: ['news'] });
    const [after] = await carol.waitForEvent('after');
    expect(after!.meta).toMatchObject({ offset: 6, epoch: answer.channels.news!.epoch });
    expect(carol.events('m').map((e) => e.data)).toEqual([1, 2, 3, 4, 5]); // nothing replayed as if new
    carol.close();
  });

  it('tells clients when Redis came back empty: they reconnect and learn recovered: false', async () => {
    const { redis, node } = await cluster(); // no persistence
    const bob = await connectClient(node.url, await token('bob', { channels: ['news'] }), {
      reconnection: true,
    });
    await bob.request<SubAnswer>('subscribe', { channels: ['news'] });
    await post(`${node.url}/v1/publish`, { event: 'm', channels: ['news'] });
    const [m] = await bob.waitForEvent('m');
    await redis.kill();
    await redis.restart();
    const [notice] = await bob.waitForEvent('pushrelay:disconnect', 1, 15_000);
    expect(notice!.data).toMatchObject({ code: 4102, reason: 'resync', reconnect: true });
    await bob.waitForEvent('pushrelay:connected', 2, 10_000); // reconnected, not merely not yet closed
    const answer = await bob.request<SubAnswer>('subscribe', {
      channels: ['news'],
      since: { news: { offset: m!.meta!.offset, epoch: m!.meta!.epoch } },
    });
    expect(answer.channels.news!.recovered).toBe(false);
    expect(answer.channels.news!.epoch).not.toBe(m!.meta!.epoch);
    bob.close();
  });

  it('with replicas to wait for, does not believe a master that came back empty and alone; a replica makes it the truth', async () => {
    // What a Sentinel setup can show a node for a moment: the old master
    // restarted empty (no persistence) and not yet made a replica of the new
    // one. With PUSHRELAY_REDIS_WAIT_REPLICAS=1 nothing was acknowledged
    // without a replica, so a master without one cannot say history is gone.
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(redis.port)] });
    cleanup.push(() => replica.stop());
    const admin = redis.client();
    await waitFor(async () => /slave0:.*state=online/.test(await admin.info('replication')));
    const node = await startInProcess({
      REDIS_URL: redis.url,
      PUSHRELAY_REDIS_WAIT_REPLICAS: '1',
      PUSHRELAY_REDIS_WAIT_MS: '300',
    });
    cleanup.push(() => node.stop());
    const dana = await connectClient(node.url, await token('dana', { channels: ['news'] }), {
      reconnection: true,
    });
    await dana.request<SubAnswer>('subscribe', { channels: ['news'] });
    expect((await post(`${node.url}/v1/publish`, { event: 'm', channels: ['news'] })).status).toBe(200);
    const [m] = await dana.waitForEvent('m');

    await replica.kill();
    await redis.kill();
    await redis.restart(); // empty, and no replica
    await waitFor(async () => (await fetch(`${node.url}/readyz`)).status === 200, { timeoutMs: 15_000 });
    // Publishes cannot be confirmed, and the node's resync keeps asking instead of declaring a loss.
    expect((await post(`${node.url}/v1/publish`, { event: 'x', channels: ['news'] })).status).toBe(503);
    await sleep(2000);
    expect(dana.events('pushrelay:disconnect')).toEqual([]);
    expect(dana.socket.connected).toBe(true);

    // A replica in sync with it: now the master's word holds, and the loss is real.
    await replica.restart();
    const [notice] = await dana.waitForEvent('pushrelay:disconnect', 1, 15_000);
    expect(notice!.data).toMatchObject({ code: 4102, reason: 'resync', reconnect: true });
    await dana.waitForEvent('pushrelay:connected', 2, 10_000);
    const answer = await dana.request<SubAnswer>('subscribe', {
      channels: ['news'],
      since: { news: { offset: m!.meta!.offset, epoch: m!.meta!.epoch } },
    });
    expect(answer.channels.news!.recovered).toBe(false);
    dana.close();
  });
});
