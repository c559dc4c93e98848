import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPresence, type LocalMembership, type Presence } from '../../src/presence/index.js';
import { createRedis, isReady } from '../../src/redis/client.js';
import { redisNames } from '../../src/redis/keys.js';
import { type RedisClusterSetup, startRedisCluster } from '../helpers/cluster.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

const log = pino({ level: 'silent' });

/** A node's local membership, as the app derives it from Socket.IO rooms. */
function membership() {
  const rooms = new Map<string, Map<string, string>>();
  const local: LocalMembership = {
    stats: () => ({ sockets: new Set([...rooms.values()].flatMap((m) => [...m.keys()])).size, users: 0 }),
    *entries() {
      for (const [channel, members] of rooms)
        for (const [sid, user] of members) yield [channel, sid, user] as const;
    },
  };
  return {
    local,
    async join(p: Presence, channel: string, sid: string, user: string) {
      if (!rooms.has(channel)) rooms.set(channel, new Map());
      rooms.get(channel)!.set(sid, user);
      await p.join(channel, sid, user);
    },
    async leave(p: Presence, channel: string, sid: string) {
      rooms.get(channel)?.delete(sid);
      await p.leave(channel, sid);
    },
  };
}

function contract(name: string, make: (nodeId: string, local: LocalMembership) => Presence) {
  describe(`${name} presence`, () => {
    it('counts sockets per channel and lists members with their socket counts', async () => {
      const m = membership();
      const p = make('n1', m.local);
      await m.join(p, 'room', 's1', 'alice');
      await m.join(p, 'room', 's2', 'alice');
      await m.join(p, 'room', 's3', 'bob');
      await m.join(p, 'user:alice', 's1', 'alice');
      expect(await p.count(['room', 'user:alice', 'empty'])).toEqual([3, 1, 0]);
      expect(Object.fromEntries(await p.members('room'))).toEqual({ alice: 2, bob: 1 });
      await m.leave(p, 'room', 's2');
      await m.leave(p, 'room', 's3');
      expect(await p.count(['room'])).toEqual([1]);
      expect(Object.fromEntries(await p.members('room'))).toEqual({ alice: 1 });
      const nodes = await p.nodes();
      expect(nodes.map((n) => n.id)).toContain('n1');
      await p.close();
    });
  });
}

contract('memory', (nodeId, local) => createPresence({ kind: 'memory', nodeId, local }));

describe('redis presence', () => {
  let redis: RedisServer;
  let prefix = 0;
  const made: Presence[] = [];
  const clients: ReturnType<typeof createRedis>[] = [];
  const make = (names: ReturnType<typeof redisNames>, nodeId: string, local: LocalMembership) => {
    const client = createRedis(new URL(redis.url), 'command', log);
    clients.push(client);
    const p = createPresence({ kind: 'redis', nodeId, local, redis: client, names, ttlSeconds: 3, log });
    made.push(p);
    return { p, client };
  };
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await redis.stop();
  });

  contract('redis', (nodeId, local) => {
    const { p, client } = make(redisNames(`p${++prefix}`), nodeId, local);
    // Counts wait for the connection like the app does after start.
    return new Proxy(p, {
      get(target, key) {
        const v = Reflect.get(target, key);
        return typeof v === 'function'
          ? async (...args: unknown[]) => {
              await waitFor(() => client.status === 'ready');
              return v.apply(target, args);
            }
          : v;
      },
    });
  });

  it('stops counting a node that dies without a word within one TTL, and cleans up after it', async () => {
    const names = redisNames(`p${++prefix}`);
    const alive = membership();
    const dying = membership();
    const a = make(names, 'alive', alive.local);
    const b = make(names, 'dying', dying.local);
    await waitFor(() => a.client.status === 'ready' && b.client.status === 'ready');
    await alive.join(a.p, 'user:carol', 'sa', 'carol');
    await dying.join(b.p, 'user:carol', 'sb', 'carol');
    await sleep(50);
    expect(await a.p.count(['user:carol'])).toEqual([2]);
    // Simulate SIGKILL: the heartbeat stops, nothing is removed.
    (b.p as unknown as { timer: NodeJS.Timeout }).timer.unref();
    clearInterval((b.p as unknown as { timer: NodeJS.Timeout }).timer);
    b.client.disconnect();
    const killedAt = Date.now();
    await waitFor(async () => (await a.p.count(['user:carol']))[0] === 1, { timeoutMs: 8000 });
    expect(Date.now() - killedAt).toBeLessThan(4500);
    // The survivor removes the dead node's entries after three TTLs.
    const c = redis.client();
    await waitFor(async () => Object.keys(await c.hgetall(names.members('user:carol'))).length === 1, {
      timeoutMs: 15_000,
    });
    expect(await c.hgetall(names.counts('user:carol'))).toEqual({ alive: '1' });
  });

  it('writes a node’s whole membership again after Redis lost it', async () => {
    const names = redisNames(`p${++prefix}`);
    const m = membership();
    const { p, client } = make(names, 'again', m.local);
    await waitFor(() => client.status === 'ready');
    await m.join(p, 'user:dave', 's1', 'dave');
    await m.join(p, 'news', 's1', 'dave');
    await redis.kill();
    await redis.restart(); // no persistence: Redis comes back empty
    await waitFor(async () => (await p.count(['user:dave', 'news'])).join() === '1,1', { timeoutMs: 10_000 });
    expect(Object.fromEntries(await p.members('news'))).toEqual({ dave: 1 });
  });
});

// The same contract on a Redis Cluster of three masters: one read or write
// batch spans keys of several slots.
describe('redis cluster presence', () => {
  let cluster: RedisClusterSetup;
  const clients: ReturnType<typeof createRedis>[] = [];
  const made: Presence[] = [];
  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(async () => {
    for (const p of made) await p.close();
    for (const c of clients) c.disconnect();
    await cluster.stop();
  });

  contract('redis cluster', (nodeId, local) => {
    const client = createRedis(cluster.target, 'command', log);
    clients.push(client);
    const p = createPresence({
      kind: 'redis',
      nodeId,
      local,
      redis: client,
      names: redisNames('pc'),
      ttlSeconds: 3,
      log,
    });
    made.push(p);
    return new Proxy(p, {
      get(target, key) {
        const v = Reflect.get(target, key);
        return typeof v === 'function'
          ? async (...args: unknown[]) => {
              await waitFor(() => isReady(client));
              return v.apply(target, args);
            }
          : v;
      },
    });
  });
});
