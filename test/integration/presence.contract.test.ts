import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPresence,
  type LocalMembership,
  type Member,
  type Presence,
  type PresenceEvent,
  presenceChannels,
} from '../../src/presence/index.js';
import { createRedis, isReady, type Redis } from '../../src/redis/client.js';
import { type RedisNames, redisNames } from '../../src/redis/keys.js';
import { type RedisClusterSetup, startRedisCluster } from '../helpers/cluster.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

const log = pino({ level: 'silent' });
/** `room:*` is a presence namespace; `news` lists members without member events. */
const isPresenceChannel = presenceChannels((channel) => channel.startsWith('room:'));
const MAX_INFO_BYTES = 256;

/** A node's local membership, as the app derives it from Socket.IO rooms. */
function membership() {
  const rooms = new Map<string, Map<string, Member>>();
  const local: LocalMembership = {
    stats: () => ({ sockets: new Set([...rooms.values()].flatMap((m) => [...m.keys()])).size, users: 0 }),
    connections: () => new Set([...rooms.values()].flatMap((m) => [...m.keys()])).size,
    sockets: (channel) => rooms.get(channel)?.size ?? 0,
    has: (channel, socketId) => rooms.get(channel)?.has(socketId) ?? false,
    *entries() {
      for (const [channel, members] of rooms)
        for (const [sid, member] of members) yield [channel, sid, member] as const;
    },
  };
  return {
    local,
    async join(p: Presence, channel: string, sid: string, user: string, info?: object) {
      const member = { user, ...(info ? { info: JSON.stringify(info) } : {}) };
      if (!rooms.has(channel)) rooms.set(channel, new Map());
      rooms.get(channel)!.set(sid, member);
      await p.join(channel, sid, member);
    },
    async leave(p: Presence, channel: string, sid: string) {
      rooms.get(channel)?.delete(sid);
      if (rooms.get(channel)?.size === 0) rooms.delete(channel);
      await p.leave(channel, sid);
    },
    /** Forgets a socket without telling presence, as a node that lost its writes would. */
    forget(channel: string, sid: string) {
      rooms.get(channel)?.delete(sid);
    },
  };
}

/** Every event a presence produces, with the parts tests compare (not ts, node or socket). */
function record(...presences: Presence[]) {
  const events: PresenceEvent[] = [];
  for (const p of presences) p.onEvent((e) => events.push(e));
  return {
    events,
    brief: () =>
      events.map((e) =>
        [
          e.type,
          'channel' in e ? e.channel : '',
          'user' in e ? e.user : '',
          'info' in e ? (e.info ?? '') : '',
        ]
          .filter((x, i) => i === 0 || x !== '')
          .join(' '),
      ),
    clear: () => events.splice(0),
  };
}

interface Made {
  presence: Presence;
  refused: () => number;
}

function contract(name: string, make: (nodeId: string, local: LocalMembership) => Made) {
  describe(`${name} presence`, () => {
    it('counts sockets per channel and lists users with their socket counts and user_info', async () => {
      const m = membership();
      const { presence: p } = make('n1', m.local);
      await m.join(p, 'room:1', 's1', 'alice', { name: 'Alice' });
      await m.join(p, 'room:1', 's2', 'alice', { name: 'Alice' });
      await m.join(p, 'room:1', 's3', 'bob');
      await m.join(p, 'user:alice', 's1', 'alice');
      expect(await p.count(['room:1', 'user:alice', 'empty'])).toEqual([3, 1, 0]);
      expect(await p.members('room:1')).toEqual([
        { user: 'alice', sockets: 2, info: '{"name":"Alice"}' },
        { user: 'bob', sockets: 1 },
      ]);
      await m.leave(p, 'room:1', 's2');
      await m.leave(p, 'room:1', 's3');
      expect(await p.count(['room:1'])).toEqual([1]);
      expect(await p.members('room:1')).toEqual([{ user: 'alice', sockets: 1, info: '{"name":"Alice"}' }]);
      expect((await p.nodes()).map((n) => n.id)).toContain('n1');
      await p.close();
    });

    it('keeps a user’s own channel without user_info through its sockets coming and going', async () => {
      const m = membership();
      const { presence: p } = make('n1', m.local);
      const r = record(p);
      await m.join(p, 'user:carl', 's1', 'carl');
      await p.join('user:carl', 's1', { user: 'carl' }); // again: counted once
      await p.leave('user:carl', 's9'); // never joined: leaves nothing
      expect(await p.count(['user:carl'])).toEqual([1]);
      await m.join(p, 'user:carl', 's2', 'carl');
      expect(await p.count(['user:carl'])).toEqual([2]);
      expect(r.brief()).toEqual(['user.online carl']);
      await m.leave(p, 'user:carl', 's1');
      await p.leave('user:carl', 's1'); // again: nothing more
      expect(await p.count(['user:carl'])).toEqual([1]);
      expect(r.brief()).toEqual(['user.online carl']);
      await m.leave(p, 'user:carl', 's2');
      expect(await p.count(['user:carl'])).toEqual([0]);
      expect(r.brief()).toEqual(['user.online carl', 'user.offline carl']);
      await m.join(p, 'user:carl', 's3', 'carl');
      expect(r.brief()).toEqual(['user.online carl', 'user.offline carl', 'user.online carl']);
      await p.close();
    });

    it('produces one transition per user, not per socket, and the channel’s own', async () => {
      const m = membership();
      const { presence: p } = make('n1', m.local);
      const r = record(p);
      await m.join(p, 'user:alice', 's1', 'alice', { name: 'Alice' });
      await m.join(p, 'room:1', 's1', 'alice', { name: 'Alice' });
      await m.join(p, 'user:alice', 's2', 'alice', { name: 'Alice' });
      await m.join(p, 'room:1', 's2', 'alice', { name: 'Alice' });
      await m.join(p, 'room:1', 's3', 'bob');
      await m.join(p, 'news', 's3', 'bob');
      expect(r.brief()).toEqual([
        'user.online alice {"name":"Alice"}',
        'channel.occupied room:1',
        'member.added room:1 alice {"name":"Alice"}',
        'member.added room:1 bob',
        'channel.occupied news', // a channel listing members, but no member events
      ]);
      const added = r.events.find((e) => e.type === 'member.added')!;
      expect(added).toMatchObject({ node: 'n1', socket: 's1' });
      expect(Math.abs(added.ts - Date.now())).toBeLessThan(60_000);
      r.clear();
      // Closing one of two tabs changes nothing anyone sees.
      await m.leave(p, 'room:1', 's1');
      await m.leave(p, 'user:alice', 's1');
      expect(r.brief()).toEqual([]);
      await m.leave(p, 'room:1', 's2');
      await m.leave(p, 'user:alice', 's2');
      await m.leave(p, 'room:1', 's3');
      await m.leave(p, 'news', 's3');
      expect(r.brief()).toEqual([
        'member.removed room:1 alice {"name":"Alice"}',
        'user.offline alice',
        'member.removed room:1 bob',
        'channel.vacated room:1',
        'channel.vacated news',
      ]);
      expect(await p.count(['room:1', 'user:alice', 'news'])).toEqual([0, 0, 0]);
      await p.close();
    });

    it('keeps joins and leaves idempotent: a repeated join counts once, an unknown leave does nothing', async () => {
      const m = membership();
      const { presence: p } = make('n1', m.local);
      const r = record(p);
      await m.join(p, 'room:2', 's1', 'carol');
      await p.join('room:2', 's1', { user: 'carol' });
      await p.join('room:2', 's1', { user: 'carol', info: '{"x":1}' });
      expect(await p.count(['room:2'])).toEqual([1]);
      expect(await p.members('room:2')).toEqual([{ user: 'carol', sockets: 1 }]);
      await p.leave('room:2', 'nobody');
      await p.leave('elsewhere', 's1');
      expect(await p.count(['room:2'])).toEqual([1]);
      await m.leave(p, 'room:2', 's1');
      await p.leave('room:2', 's1');
      expect(r.brief()).toEqual([
        'channel.occupied room:2',
        'member.added room:2 carol',
        'member.removed room:2 carol',
        'channel.vacated room:2',
      ]);
      await p.close();
    });

    it('keeps the latest user_info of a user, and drops one over the size limit', async () => {
      const m = membership();
      const made = make('n1', m.local);
      const p = made.presence;
      const r = record(p);
      await m.join(p, 'room:3', 's1', 'dave', { v: 1 });
      await m.join(p, 'room:3', 's2', 'dave', { v: 2 });
      await m.join(p, 'room:3', 's3', 'dave'); // no info: the user's stays
      expect(await p.members('room:3')).toEqual([{ user: 'dave', sockets: 3, info: '{"v":2}' }]);
      const big = { bio: 'x'.repeat(MAX_INFO_BYTES) };
      await m.join(p, 'room:3', 's4', 'erin', big);
      expect(made.refused()).toBe(1);
      expect(await p.members('room:3')).toEqual([
        { user: 'dave', sockets: 3, info: '{"v":2}' },
        { user: 'erin', sockets: 1 },
      ]);
      // Multi-byte characters count in bytes, not characters.
      await m.join(p, 'room:3', 's5', 'fay', { n: 'é'.repeat(MAX_INFO_BYTES / 2) });
      expect(made.refused()).toBe(2);
      await m.join(p, 'room:3', 's6', 'gus', { n: 'é'.repeat(MAX_INFO_BYTES / 2 - 10) });
      expect(made.refused()).toBe(2);
      expect(r.brief()).toContain(`member.added room:3 gus {"n":"${'é'.repeat(MAX_INFO_BYTES / 2 - 10)}"}`);
      expect(r.brief()).toContain('member.added room:3 erin');
      for (const s of ['s1', 's2', 's3']) await m.leave(p, 'room:3', s);
      expect(r.brief()).toContain('member.removed room:3 dave {"v":2}');
      await p.close();
    });

    it('keeps a channel’s only socket with its user_info, and counts right as sockets come and go', async () => {
      const m = membership();
      const { presence: p } = make('n1', m.local);
      const r = record(p);
      await m.join(p, 'room:5', 's1', 'ivy', { v: 1 });
      await p.join('room:5', 's1', { user: 'ivy' });
      expect(await p.count(['room:5'])).toEqual([1]);
      expect(await p.members('room:5')).toEqual([{ user: 'ivy', sockets: 1, info: '{"v":1}' }]);
      await p.leave('room:5', 's2');
      await m.join(p, 'room:5', 's2', 'jon');
      await m.leave(p, 'room:5', 's1');
      await p.join('room:5', 's2', { user: 'jon' });
      await m.join(p, 'room:5', 's3', 'jon');
      expect(await p.count(['room:5'])).toEqual([2]);
      expect(await p.members('room:5')).toEqual([{ user: 'jon', sockets: 2 }]);
      await m.leave(p, 'room:5', 's2');
      await m.leave(p, 'room:5', 's3');
      await m.join(p, 'room:5', 's1', 'ivy');
      await m.join(p, 'room:6', 's9', 'kim', { v: 3 });
      await m.leave(p, 'room:6', 's9');
      expect(r.brief()).toEqual([
        'channel.occupied room:5',
        'member.added room:5 ivy {"v":1}',
        'member.added room:5 jon',
        'member.removed room:5 ivy {"v":1}',
        'member.removed room:5 jon',
        'channel.vacated room:5',
        'channel.occupied room:5',
        'member.added room:5 ivy',
        'channel.occupied room:6',
        'member.added room:6 kim {"v":3}',
        'member.removed room:6 kim {"v":3}',
        'channel.vacated room:6',
      ]);
      await p.close();
    });

    it('leaves every channel it still has on close, with their transitions', async () => {
      const m = membership();
      const { presence: p } = make('n1', m.local);
      const r = record(p);
      await m.join(p, 'user:hal', 's1', 'hal');
      await m.join(p, 'room:4', 's1', 'hal');
      r.clear();
      await p.close();
      expect(r.brief().sort()).toEqual([
        'channel.vacated room:4',
        'member.removed room:4 hal',
        'user.offline hal',
      ]);
    });
  });
}

contract('memory', (nodeId, local) => {
  let refused = 0;
  const presence = createPresence({
    kind: 'memory',
    nodeId,
    local,
    isPresenceChannel,
    maxInfoBytes: MAX_INFO_BYTES,
    onInfoRefused: () => refused++,
  });
  return { presence, refused: () => refused };
});

/** Method calls wait for the connection like the app does after start. */
function whenReady(p: Presence, client: Redis): Presence {
  return new Proxy(p, {
    get(target, key) {
      const v = Reflect.get(target, key);
      return typeof v === 'function' && key !== 'onEvent'
        ? async (...args: unknown[]) => {
            await waitFor(() => isReady(client));
            return v.apply(target, args);
          }
        : v;
    },
  });
}

describe('redis presence', () => {
  let redis: RedisServer;
  let prefix = 0;
  const clients: Redis[] = [];
  const made: Presence[] = [];
  const make = (names: RedisNames, nodeId: string, local: LocalMembership, ttlSeconds = 3) => {
    const client = createRedis(new URL(redis.url), 'command', log);
    clients.push(client);
    let refused = 0;
    const p = createPresence({
      kind: 'redis',
      nodeId,
      local,
      redis: client,
      names,
      ttlSeconds,
      log,
      isPresenceChannel,
      maxInfoBytes: MAX_INFO_BYTES,
      onInfoRefused: () => refused++,
    });
    made.push(p);
    return { p: whenReady(p, client), client, raw: p, refused: () => refused };
  };
  /** Simulates SIGKILL: the heartbeat stops, nothing is removed. */
  const kill = (n: ReturnType<typeof make>) => {
    clearInterval((n.raw as unknown as { timer: NodeJS.Timeout }).timer);
    n.client.disconnect();
  };
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await redis.stop();
  });

  contract('redis', (nodeId, local) => {
    const { p, refused } = make(redisNames(`p${++prefix}`), nodeId, local);
    return { presence: p, refused };
  });

  it('decides each user’s first and last socket once across nodes, however joins and leaves race', async () => {
    const names = redisNames(`p${++prefix}`);
    const nodes = ['a', 'b', 'c'].map((id) => ({ m: membership(), id }));
    const made3 = nodes.map((n) => ({ ...n, ...make(names, n.id, n.m.local) }));
    const r = record(...made3.map((n) => n.p));
    await waitFor(() => made3.every((n) => isReady(n.client)));
    const users = Array.from({ length: 20 }, (_, i) => `u${i}`);
    // Every user opens a tab on each node at the same moment, in the same channel.
    await Promise.all(users.flatMap((u) => made3.map((n) => n.m.join(n.p, 'room:race', `${n.id}-${u}`, u))));
    expect(
      r
        .brief()
        .filter((e) => e.startsWith('member.added'))
        .sort(),
    ).toEqual(users.map((u) => `member.added room:race ${u}`).sort());
    expect(r.brief().filter((e) => e.startsWith('channel.occupied'))).toEqual(['channel.occupied room:race']);
    expect(await made3[0]!.p.count(['room:race'])).toEqual([60]);
    r.clear();
    await Promise.all(users.flatMap((u) => made3.map((n) => n.m.leave(n.p, 'room:race', `${n.id}-${u}`))));
    expect(
      r
        .brief()
        .filter((e) => e.startsWith('member.removed'))
        .sort(),
    ).toEqual(users.map((u) => `member.removed room:race ${u}`).sort());
    expect(r.brief().filter((e) => e.startsWith('channel.vacated'))).toEqual(['channel.vacated room:race']);
    const c = redis.client();
    expect(
      await c.exists(names.members('room:race'), names.users('room:race'), names.counts('room:race')),
    ).toBe(0);
  });

  it('removes a dead node’s sockets within seconds, once, with their transitions, and leaves nothing behind', async () => {
    const names = redisNames(`p${++prefix}`);
    const [m1, m2, md] = [membership(), membership(), membership()];
    const a = make(names, 'alive1', m1.local);
    const b = make(names, 'alive2', m2.local);
    const d = make(names, 'dying', md.local);
    const r = record(a.p, b.p);
    await waitFor(() => isReady(a.client) && isReady(b.client) && isReady(d.client));
    await m1.join(a.p, 'user:bob', 'sb', 'bob');
    await m1.join(a.p, 'room:5', 'sb', 'bob');
    await m1.join(a.p, 'user:carol', 'sc1', 'carol');
    await md.join(d.p, 'user:carol', 'sc2', 'carol'); // carol has a tab on a survivor too
    await md.join(d.p, 'user:alice', 'sa', 'alice', { name: 'Alice' });
    await md.join(d.p, 'room:5', 'sa', 'alice', { name: 'Alice' });
    await md.join(d.p, 'room:6', 'sa', 'alice', { name: 'Alice' });
    expect(await a.p.count(['user:carol', 'room:5'])).toEqual([2, 2]);
    // A user's own channel is one user's sockets: no per-user count or info is kept for it.
    expect(await redis.client().exists(names.users('user:bob'), names.userInfo('user:alice'))).toBe(0);
    r.clear();
    kill(d);
    const killedAt = Date.now();
    await waitFor(() => r.events.length >= 4, { timeoutMs: 15_000, what: 'the dead node’s transitions' });
    const took = Date.now() - killedAt;
    // TTL (3 s) until it counts as dead, plus at most one heartbeat (1 s) until a survivor notices.
    expect(took).toBeLessThan(6000);
    await sleep(1500); // a second survivor's heartbeat: it must not produce them again
    expect(r.brief().sort()).toEqual([
      'channel.vacated room:6',
      'member.removed room:5 alice {"name":"Alice"}',
      'member.removed room:6 alice {"name":"Alice"}',
      'user.offline alice',
    ]);
    expect(r.events.every((e) => !('socket' in e) || e.socket === undefined)).toBe(true);
    expect(await a.p.count(['user:carol', 'room:5', 'user:alice'])).toEqual([1, 1, 0]);
    const c = redis.client();
    // The cleaner's last step: the node leaves the heartbeat set.
    await waitFor(async () => (await c.zscore(names.nodes, 'dying')) === null);
    for (const channel of ['user:alice', 'room:5', 'room:6', 'user:carol']) {
      const fields = Object.keys(await c.hgetall(names.members(channel)));
      expect(
        fields.filter((f) => f.startsWith('dying/')),
        channel,
      ).toEqual([]);
      expect(await c.hexists(names.counts(channel), 'dying'), channel).toBe(0);
    }
    expect(await c.hgetall(names.users('room:5'))).toEqual({ bob: '1' });
    expect(await c.exists(names.userInfo('room:5'), names.users('room:6'), names.members('user:alice'))).toBe(
      0,
    );
    expect(await c.exists(names.nodeChannels('dying'), names.node('dying'), names.cleanup('dying'))).toBe(0);
  });

  it('registers again, with its transitions, when it finds it was taken for dead', async () => {
    const names = redisNames(`p${++prefix}`);
    const [m1, m2] = [membership(), membership()];
    const a = make(names, 'steady', m1.local);
    const b = make(names, 'paused', m2.local);
    const r = record(a.p, b.p);
    await waitFor(() => isReady(a.client) && isReady(b.client));
    await m2.join(b.p, 'user:ivy', 'si', 'ivy', { n: 1 });
    await m2.join(b.p, 'room:7', 'si', 'ivy', { n: 1 });
    r.clear();
    // A long pause: no heartbeat, but the connection stays up.
    const timer = (b.raw as unknown as { timer: NodeJS.Timeout }).timer;
    clearInterval(timer);
    await waitFor(() => r.events.length >= 3, { timeoutMs: 15_000, what: 'the paused node cleaned up' });
    expect(r.brief().sort()).toEqual([
      'channel.vacated room:7',
      'member.removed room:7 ivy {"n":1}',
      'user.offline ivy',
    ]);
    // The cleaner removes the node from the heartbeat set after its sockets.
    await waitFor(async () => (await redis.client().zscore(names.nodes, 'paused')) === null);
    r.clear();
    // Back from the pause: the next heartbeat finds the node missing and writes it all again.
    await (b.raw as unknown as { heartbeat(): Promise<void> }).heartbeat();
    await waitFor(() => r.events.length >= 3, { what: 'the paused node registered again' });
    expect(r.brief().sort()).toEqual([
      'channel.occupied room:7',
      'member.added room:7 ivy {"n":1}',
      'user.online ivy {"n":1}',
    ]);
    expect(r.events.every((e) => e.node === 'paused')).toBe(true);
    expect(await a.p.count(['user:ivy', 'room:7'])).toEqual([1, 1]);
    expect(await a.p.members('room:7')).toEqual([{ user: 'ivy', sockets: 1, info: '{"n":1}' }]);
    await b.p.close();
  });

  it('removes, after a lost connection, entries of sockets that left while their writes failed', async () => {
    const names = redisNames(`p${++prefix}`);
    const m = membership();
    const n = make(names, 'flaky', m.local);
    const r = record(n.p);
    await waitFor(() => isReady(n.client));
    await m.join(n.p, 'room:8', 's1', 'jay');
    await m.join(n.p, 'room:8', 's2', 'kim');
    r.clear();
    n.client.disconnect();
    // kim's socket goes while Redis cannot be reached: the write fails.
    m.forget('room:8', 's2');
    await expect(n.raw.leave('room:8', 's2')).rejects.toMatchObject({ code: 'unavailable' });
    await waitFor(() => n.client.status === 'end');
    await n.client.connect();
    await waitFor(() => r.events.length >= 1, { what: 'kim removed after the reconnect' });
    expect(r.brief()).toEqual(['member.removed room:8 kim']);
    expect(await n.p.members('room:8')).toEqual([{ user: 'jay', sockets: 1 }]);
    expect(await redis.client().hkeys(names.members('room:8'))).toEqual(['flaky/s1']);
  });

  it('removes what a previous process with the same node id left', async () => {
    const names = redisNames(`p${++prefix}`);
    const before = membership();
    const old = make(names, 'fixed', before.local);
    await waitFor(() => isReady(old.client));
    await before.join(old.p, 'user:lea', 's-old', 'lea');
    kill(old);
    const now = membership();
    const restarted = make(names, 'fixed', now.local);
    const r = record(restarted.p);
    await waitFor(() => r.events.length >= 1, { what: 'the old socket removed' });
    expect(r.brief()).toEqual(['user.offline lea']);
    expect(await restarted.p.count(['user:lea'])).toEqual([0]);
  });

  it('does not take the other nodes for dead after Redis was away for longer than the TTL', async () => {
    const kept = await startRedis({ appendonly: true, appendfsync: 'always' });
    const names = redisNames('outage');
    const [m1, m2] = [membership(), membership()];
    const on = (id: string, local: LocalMembership) => {
      const client = createRedis(new URL(kept.url), 'command', log);
      clients.push(client);
      const presence = createPresence({
        kind: 'redis',
        nodeId: id,
        local,
        redis: client,
        names,
        ttlSeconds: 3,
        log,
        isPresenceChannel,
        maxInfoBytes: MAX_INFO_BYTES,
      });
      made.push(presence);
      return { p: whenReady(presence, client), client };
    };
    try {
      const a = on('first', m1.local);
      const b = on('second', m2.local);
      const r = record(a.p, b.p);
      await waitFor(() => isReady(a.client) && isReady(b.client));
      await m1.join(a.p, 'room:9', 's1', 'max');
      await m2.join(b.p, 'room:9', 's2', 'nia');
      r.clear();
      await kept.kill();
      await sleep(4500); // every heartbeat in Redis is now older than the TTL
      await kept.restart(); // with its data (AOF, fsync always)
      await waitFor(() => isReady(a.client) && isReady(b.client), { timeoutMs: 10_000 });
      await sleep(4000); // more than a TTL of heartbeats on both sides
      expect(r.brief()).toEqual([]);
      expect(await a.p.members('room:9')).toEqual([
        { user: 'max', sockets: 1 },
        { user: 'nia', sockets: 1 },
      ]);
    } finally {
      await kept.stop();
    }
  });

  it('writes a node’s whole membership again after Redis lost it', async () => {
    const names = redisNames(`p${++prefix}`);
    const m = membership();
    const { p, client } = make(names, 'again', m.local);
    const r = record(p);
    await waitFor(() => isReady(client));
    await m.join(p, 'user:dave', 's1', 'dave', { d: 1 });
    await m.join(p, 'news', 's1', 'dave', { d: 1 });
    r.clear();
    await redis.kill();
    await redis.restart(); // no persistence: Redis comes back empty
    await waitFor(async () => (await p.count(['user:dave', 'news'])).join() === '1,1', { timeoutMs: 10_000 });
    expect(await p.members('news')).toEqual([{ user: 'dave', sockets: 1, info: '{"d":1}' }]);
    // Nobody saw dave go, but Redis forgot him: he comes online again.
    expect(r.brief().sort()).toEqual(['channel.occupied news', 'user.online dave {"d":1}']);
  });
});

// The same contract on a Redis Cluster of three masters: one read or write
// batch spans keys of several slots.
describe('redis cluster presence', () => {
  let cluster: RedisClusterSetup;
  const clients: Redis[] = [];
  const made: Presence[] = [];
  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(async () => {
    for (const p of made) await p.close();
    for (const c of clients) c.disconnect();
    await cluster.stop();
  });

  let prefix = 0;
  contract('redis cluster', (nodeId, local) => {
    const client = createRedis(cluster.target, 'command', log);
    clients.push(client);
    let refused = 0;
    const p = createPresence({
      kind: 'redis',
      nodeId,
      local,
      redis: client,
      names: redisNames(`pc${++prefix}`),
      ttlSeconds: 3,
      log,
      isPresenceChannel,
      maxInfoBytes: MAX_INFO_BYTES,
      onInfoRefused: () => refused++,
    });
    made.push(p);
    return { presence: whenReady(p, client), refused: () => refused };
  });
});
