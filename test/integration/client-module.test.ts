import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Meta, PushRelay, PushRelayError, type ReloadNotice } from '../../src/client/index.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { startTcpBalancer, type TcpBalancer } from '../helpers/tcp-balancer.js';
import { sleep, waitFor } from '../helpers/wait.js';

// pushrelay/client in Node, against real relay nodes (two, on one Redis)
// behind a real TCP balancer that can cut connections and fail over.

type Node = Awaited<ReturnType<typeof startInProcess>>;

interface Got {
  data: unknown;
  meta: Meta;
}

/** Everything a PushRelay reports, recorded for assertions. */
function record(relay: PushRelay) {
  const log = {
    connected: [] as string[],
    errors: [] as PushRelayError[],
    reloads: [] as ReloadNotice[],
    disconnects: [] as string[],
  };
  relay.on('pushrelay:connected', (e) => log.connected.push(e.node));
  relay.on('pushrelay:error', (e) => log.errors.push(e));
  relay.on('pushrelay:reload', (n) => log.reloads.push(n));
  relay.on('pushrelay:disconnect', (n) => log.disconnects.push(n.reason));
  return log;
}

describe('pushrelay/client', () => {
  let redis: RedisServer;
  let a: Node;
  let b: Node;
  let lb: TcpBalancer;
  const open: PushRelay[] = [];
  const make = (...args: ConstructorParameters<typeof PushRelay>) => {
    const relay = new PushRelay(...args);
    open.push(relay);
    return relay;
  };
  const publish = (body: Record<string, unknown>, node = a) => post(`${node.url}/v1/publish`, body);
  const connected = (relay: PushRelay, log: { connected: string[] }, n = 1) =>
    waitFor(() => relay.connected && log.connected.length >= n, { what: `connection #${n}` });

  beforeAll(async () => {
    redis = await startRedis();
    const env = { REDIS_URL: redis.url, PUSHRELAY_NAMESPACES: '{"small":{"history_size":2}}' };
    a = await startInProcess(env);
    b = await startInProcess(env);
    lb = await startTcpBalancer([a.port, b.port]);
  });
  afterEach(() => {
    for (const r of open.splice(0)) r.close();
    lb.use([a.port, b.port]);
    lb.resume();
  });
  afterAll(async () => {
    await lb.close();
    await a.stop();
    await b.stop();
    await redis.stop();
  });

  it('calls subscribe handlers per channel and on handlers once per message id', async () => {
    const relay = make(a.url, { token: await token('alice', { channels: ['order:*'] }) });
    const log = record(relay);
    const inChannel: Got[] = [];
    const byEvent: Got[] = [];
    const sub = relay.subscribe('order:42', (data, meta) => inChannel.push({ data, meta }));
    relay.on('bid', (data, meta) => byEvent.push({ data, meta }));
    expect(await sub.ready).toMatchObject({ offset: 0, recovered: false });
    expect(relay.user).toBe('alice');
    expect(log.connected).toEqual([a.id]);

    // One message, two channels the socket is in: once per channel, once for on().
    await publish({ event: 'bid', data: { amount: 5 }, users: ['alice'], channels: ['order:42'] });
    await waitFor(() => inChannel.length === 1 && byEvent.length === 1);
    await sleep(100);
    expect(byEvent).toHaveLength(1);
    expect(inChannel[0]!.meta).toMatchObject({ channel: 'order:42', event: 'bid', offset: 1 });
    expect(byEvent[0]!.meta.id).toBe(inChannel[0]!.meta.id);
    expect(relay.positions()).toMatchObject({ 'order:42': { offset: 1 }, 'user:alice': { offset: 1 } });

    await sub.unsubscribe();
    await publish({ event: 'bid', data: { amount: 6 }, channels: ['order:42'] });
    await sleep(200);
    expect(inChannel).toHaveLength(1);
    expect(log.errors).toEqual([]);
  });

  it('recovers what it missed while cut off, on another node, in order, without a reload', async () => {
    const relay = make(lb.url, { token: await token('bob', { channels: ['room:*'] }) });
    const log = record(relay);
    const room: unknown[] = [];
    const mine: unknown[] = [];
    const sub = relay.subscribe('room:1', (data) => room.push(data));
    relay.on('dm', (data) => mine.push(data));
    await connected(relay, log);
    // In the room before the first publish: a message published before the
    // subscribe is answered is history the fresh subscriber does not ask for.
    await sub.ready;
    await publish({ event: 'm', data: 1, channels: ['room:1'] });
    await waitFor(() => room.length === 1);

    lb.pause();
    lb.use([b.port]);
    lb.cut();
    await waitFor(() => !relay.connected);
    await publish({ event: 'm', data: 2, channels: ['room:1'] }, b);
    await publish({ event: 'dm', data: 'while away', users: ['bob'] }, b);
    await publish({ event: 'm', data: 3, channels: ['room:1'] }, b);
    lb.resume();

    await connected(relay, log, 2);
    await waitFor(() => room.length === 3 && mine.length === 1, { what: 'the missed messages' });
    expect(log.connected).toEqual([a.id, b.id]);
    expect(room).toEqual([1, 2, 3]);
    expect(mine).toEqual(['while away']);
    expect(log.reloads).toEqual([]);
    await publish({ event: 'm', data: 4, channels: ['room:1'] }, a);
    await waitFor(() => room.length === 4);
    expect(room).toEqual([1, 2, 3, 4]);
  });

  it('tells the app to reload when history no longer reaches back', async () => {
    const relay = make(lb.url, { token: await token('carol', { channels: ['small:*'] }) });
    const log = record(relay);
    const got: unknown[] = [];
    await relay.subscribe('small:x', (data) => got.push(data)).ready;
    lb.pause();
    lb.cut();
    await waitFor(() => !relay.connected);
    for (let i = 1; i <= 4; i++) await publish({ event: 'm', data: i, channels: ['small:x'] });
    lb.resume();
    await waitFor(() => log.reloads.length === 1, { what: 'a reload notice' });
    expect(log.reloads).toEqual([{ channel: 'small:x', reason: 'not_recovered' }]);
    expect(got).toEqual([]);
    expect(relay.positions()['small:x']!.offset).toBe(4);
  });

  it('picks up where a previous page left off, from saved positions', async () => {
    const first = make(a.url, { token: await token('dave', { channels: ['room:*'] }) });
    const seen: unknown[] = [];
    await first.subscribe('room:saved', (d) => seen.push(d)).ready;
    await publish({ event: 'm', data: 'a', channels: ['room:saved'] });
    await publish({ event: 'dm', data: 'x', users: ['dave'] });
    await waitFor(() => seen.length === 1 && first.positions()['user:dave']?.offset === 1);
    const saved = first.positions();
    first.close();
    await publish({ event: 'm', data: 'b', channels: ['room:saved'] });
    await publish({ event: 'dm', data: 'y', users: ['dave'] });

    const second = make(b.url, { token: await token('dave', { channels: ['room:*'] }), positions: saved });
    const log = record(second);
    const room: unknown[] = [];
    const dms: unknown[] = [];
    second.on('dm', (d) => dms.push(d));
    second.subscribe('room:saved', (d) => room.push(d));
    await waitFor(() => room.length === 1 && dms.length === 1);
    expect(room).toEqual(['b']);
    expect(dms).toEqual(['y']);
    expect(log.reloads).toEqual([]);
  });

  it('refreshes a short-lived token before it expires, on the same socket', async () => {
    let fetched = 0;
    const relay = make(a.url, {
      token: () => {
        fetched++;
        return token('erin', { ttlSeconds: 3 });
      },
    });
    const log = record(relay);
    await connected(relay, log);
    const socketId = relay.socket.id;
    await sleep(5000);
    expect(relay.connected).toBe(true);
    expect(relay.socket.id).toBe(socketId);
    expect(fetched).toBeGreaterThanOrEqual(3);
    expect(log.disconnects).toEqual([]);
    expect(log.errors).toEqual([]);
  });

  it('reconnects with a new token after the relay ended the session for an expired one', async () => {
    let calls = 0;
    const relay = make(a.url, {
      token: async () => {
        calls++;
        // The app's token endpoint is down when the refresh is due.
        if (calls === 2) throw new Error('token endpoint unavailable');
        return token('frank', { ttlSeconds: 2 });
      },
    });
    const log = record(relay);
    await connected(relay, log);
    await waitFor(() => log.connected.length === 2, { timeoutMs: 10_000, what: 'a reconnect' });
    expect(log.errors.map((e) => e.code)).toContain('token_unavailable');
    expect(log.disconnects[0]).toBe('token_expired');
    expect(relay.connected).toBe(true);
  });

  it('reports a refused token and stays down when it has no way to get another', async () => {
    const relay = make(a.url, { token: 'not-a-token' });
    const log = record(relay);
    await waitFor(() => log.errors.length === 1);
    expect(log.errors[0]).toBeInstanceOf(PushRelayError);
    expect(log.errors[0]!.code).toBe('token_invalid');
    await sleep(1500);
    expect(relay.connected).toBe(false);
    expect(log.errors).toHaveLength(1);
  });

  it('asks the token function again after a refused token', async () => {
    let calls = 0;
    const relay = make(a.url, {
      token: async () => (++calls === 1 ? 'expired.or.garbage' : token('gina')),
    });
    const log = record(relay);
    await connected(relay, log);
    expect(log.errors.map((e) => e.code)).toEqual(['token_invalid']);
    expect(relay.user).toBe('gina');
  });

  it('rejects a refused subscribe and publish with the relay’s code', async () => {
    const relay = make(a.url, { token: await token('hal', { channels: ['order:1'] }) });
    const log = record(relay);
    const sub = relay.subscribe('order:2', () => {});
    await expect(sub.ready).rejects.toMatchObject({ name: 'PushRelayError', code: 'channel_not_allowed' });
    expect(log.errors.map((e) => e.code)).toEqual(['channel_not_allowed']);
    await expect(relay.publish('order:1', 'chat', 'hi')).rejects.toMatchObject({
      code: 'publish_not_allowed',
    });
    // Another user's channel is refused without asking the relay.
    await expect(relay.subscribe('user:someone-else', () => {}).ready).rejects.toMatchObject({
      code: 'channel_not_allowed',
    });
  });

  it('refuses bad arguments at once', () => {
    expect(() => new PushRelay('', { token: 't' })).toThrow(TypeError);
    expect(() => new PushRelay(a.url, { token: '' })).toThrow('options.token');
    expect(() => new PushRelay(a.url, undefined as never)).toThrow(TypeError);
    const relay = make(a.url, { token: 'x', socket: { autoConnect: false } });
    expect(() => relay.subscribe('', () => {})).toThrow('channel');
    expect(() => relay.subscribe('order:1', 'nope' as never)).toThrow('handler');
    expect(() => relay.on('bid', undefined as never)).toThrow('handler');
    relay.close();
    expect(() => relay.subscribe('order:1', () => {})).toThrow(PushRelayError);
  });
});
