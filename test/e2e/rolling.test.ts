import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConnectedEvent, DisconnectNotice } from '../../src/realtime/events.js';
import { mintToken } from '../../src/realtime/mint.js';
import { type Balancer, startBalancer } from '../helpers/balancer.js';
import { readCompose, relayServices, serviceEnv } from '../helpers/deploy.js';
import { post } from '../helpers/http.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// A deploy, the way an operator rolls one: behind the compose file's load
// balancer, under a steady publish load, each node in turn gets SIGTERM,
// drains, exits and comes back on its address. Clients are stock
// socket.io-client sockets that remember the last offset they saw and hand it
// back at every reconnect, as the README's client does.

const compose = readCompose();
const relays = relayServices(compose);
const env = (service: (typeof relays)[number][1]) => ({
  ...serviceEnv(service),
  LOG_LEVEL: 'warn',
  // Short, but longer than haproxy needs to see /readyz fail (fall 2 x fastinter 250 ms after a 1 s check).
  PUSHRELAY_DRAIN_SECONDS: '4',
});
const relayEnv = serviceEnv(relays[0]![1]);
const secret = relayEnv.PUSHRELAY_KEYS!.split(':')[1]!;
const jwtSecret = relayEnv.PUSHRELAY_JWT_SECRET!;

interface Tracked {
  readonly user: string;
  readonly socket: Socket;
  readonly ids: string[];
  readonly offsets: number[];
  readonly notices: string[];
  /** Reconnects whose since position the relay could not honour: the app would have had to reload. */
  unrecovered: number;
  connects: number;
  node: string;
}

function trackedClient(url: string, user: string, token: string, transports: ('polling' | 'websocket')[]) {
  const positions: Record<string, { offset: number; epoch: string }> = {};
  const socket = io(url, {
    // Called at every (re)connect, so the relay always gets the latest position.
    auth: (cb) => cb({ token, since: { ...positions } }),
    transports,
    withCredentials: true,
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 1000,
  });
  const t: Tracked = {
    user,
    socket,
    ids: [],
    offsets: [],
    notices: [],
    unrecovered: 0,
    connects: 0,
    node: '',
  };
  socket.on(
    'roll',
    (_data: unknown, meta: { id: string; channel: string; offset: number; epoch: string }) => {
      t.ids.push(meta.id);
      t.offsets.push(meta.offset);
      positions[meta.channel] = { offset: meta.offset, epoch: meta.epoch };
    },
  );
  socket.on('pushrelay:connected', (e: ConnectedEvent) => {
    t.connects++;
    t.node = e.node;
    for (const [channel, p] of Object.entries(e.channels)) {
      if (positions[channel] && !p.recovered) t.unrecovered++;
      positions[channel] = { offset: p.offset, epoch: p.epoch };
    }
  });
  socket.on('pushrelay:disconnect', (n: DisconnectNotice) => t.notices.push(n.reason));
  return t;
}

describe('a rolling restart behind the load balancer', () => {
  let redis: RedisServer;
  const nodes: RelayNode[] = [];
  let lb: Balancer;
  const clients: Tracked[] = [];

  beforeAll(async () => {
    redis = await startRedis({ args: compose.services.redis!.command!.slice(1) });
    nodes.push(
      ...(await Promise.all(relays.map(([, s]) => startProcess({ ...env(s), REDIS_URL: redis.url })))),
    );
    lb = await startBalancer(Object.fromEntries(relays.map(([name], i) => [name, nodes[i]!.port])));
  });
  afterAll(async () => {
    for (const c of clients) c.socket.close();
    await lb?.stop();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  it('answers every publish, loses and duplicates nothing, and ends with every client connected', async () => {
    const users = ['r0', 'r1', 'r2', 'r3', 'r4', 'r5'];
    for (const [i, user] of users.entries()) {
      clients.push(
        trackedClient(lb.url, user, await mintToken(jwtSecret, user), [
          i % 2 === 0 ? 'polling' : 'websocket',
        ]),
      );
    }
    await waitFor(() => clients.every((c) => c.connects === 1), { what: 'every client connected' });
    expect(new Set(clients.map((c) => c.node)).size).toBeGreaterThan(1);

    // The publishing app: two workers POSTing through the balancer, each message to one user.
    const sent = new Map<string, string[]>(users.map((u) => [u, []]));
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    let publishing = true;
    let seq = 0;
    const worker = async () => {
      while (publishing) {
        const user = users[seq++ % users.length]!;
        try {
          const res = await post(
            `${lb.url}/v1/publish`,
            { event: 'roll', data: seq, users: [user] },
            { secret },
          );
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (res.status === 200) sent.get(user)!.push(res.body.id as string);
          else failures.push(`${res.status} ${JSON.stringify(res.body)}`);
        } catch (err) {
          failures.push(String(err));
        }
        await sleep(30);
      }
    };
    const workers = [worker(), worker()];
    await sleep(1000);

    for (const [i, [name]] of relays.entries()) {
      const node = nodes[i]!;
      const exited = node.kill('SIGTERM');
      // Readiness fails at once: the balancer stops sending it new sessions and publishes (NOLB)
      // while its own sessions keep reaching it until the drain has moved them.
      await waitFor(async () => (await lb.servers())[name]!.startsWith('NOLB'), {
        what: `haproxy to stop balancing to ${name}`,
      });
      expect(await exited, `${name} exit code`).toBe(0);
      nodes[i] = await startProcess({ ...env(relays[i]![1]), REDIS_URL: redis.url }, { port: node.port });
      await waitFor(async () => (await lb.servers())[name] === 'UP', { what: `haproxy to mark ${name} up` });
    }
    await sleep(1000);
    publishing = false;
    await Promise.all(workers);

    expect(failures).toEqual([]);
    expect([...statuses.keys()]).toEqual([200]);
    const total = [...sent.values()].reduce((n, ids) => n + ids.length, 0);
    expect(total).toBeGreaterThan(100);

    // Every client was on a node that was restarted, so each was told to go and came back.
    await waitFor(
      () => clients.every((c) => c.socket.connected && c.ids.length >= sent.get(c.user)!.length),
      { what: 'every client connected with every message', timeoutMs: 20_000 },
    ).catch(() => {
      // The assertions below say which client is missing what.
    });
    for (const c of clients) {
      const expected = sent.get(c.user)!;
      const got = new Set(c.ids);
      const lost = expected.filter((id) => !got.has(id));
      expect(c.socket.connected, c.user).toBe(true);
      expect({
        user: c.user,
        lost,
        duplicates: c.ids.length - got.size,
        extra: got.size - expected.length,
      }).toEqual({ user: c.user, lost: [], duplicates: 0, extra: 0 });
      // In order: the user's channel offsets 1, 2, 3, ... with no gap and no repeat.
      expect(c.offsets, c.user).toEqual(c.offsets.map((_, i) => i + 1));
      expect(c.notices, c.user).toContain('draining');
      expect(c.connects, c.user).toBeGreaterThan(1);
      expect(c.unrecovered, c.user).toBe(0);
    }
  });
});
