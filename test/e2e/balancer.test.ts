import { io } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintToken } from '../../src/realtime/mint.js';
import { type Balancer, startBalancer } from '../helpers/balancer.js';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { readCompose, relayServices, serviceEnv } from '../helpers/deploy.js';
import { post } from '../helpers/http.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { runTour } from '../helpers/tour.js';

// docker-compose.yml without Docker: its Redis command line, its three relays'
// environment, and its HAProxy configuration run by Debian's haproxy, with
// only addresses changed. What a user gets from `docker compose up`.
const compose = readCompose();
const relays = relayServices(compose);
const relayEnv = serviceEnv(relays[0]![1]);
const secret = relayEnv.PUSHRELAY_KEYS!.split(':')[1]!;
const jwtSecret = relayEnv.PUSHRELAY_JWT_SECRET!;

describe('three nodes behind the compose file’s load balancer', () => {
  let redis: RedisServer;
  let nodes: RelayNode[] = [];
  let lb: Balancer;
  const clients: TestClient[] = [];
  const connect = async (user: string, transports: ('polling' | 'websocket')[], withCredentials = true) => {
    const c = await connectClient(lb.url, await mintToken(jwtSecret, user), { transports, withCredentials });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    const redisCommand = compose.services.redis!.command!;
    expect(redisCommand[0]).toBe('redis-server');
    redis = await startRedis({ args: redisCommand.slice(1) });
    nodes = await Promise.all(
      relays.map(([, service]) =>
        startProcess({ ...serviceEnv(service), REDIS_URL: redis.url, LOG_LEVEL: 'warn' }),
      ),
    );
    lb = await startBalancer(Object.fromEntries(relays.map(([name], i) => [name, nodes[i]!.port])));
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await lb?.stop();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  it('runs Redis with the append-only file on', async () => {
    expect(await redis.client().config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
  });

  it('delivers a publish POSTed through it to a long-polling client and a WebSocket client on different nodes', async () => {
    const polling = await connect('lb-poll', ['polling']);
    let ws = await connect('lb-ws', ['websocket']);
    // New sessions go to the node with the fewest connections; a few tries find another node.
    for (let i = 0; i < 6 && ws.connected.node === polling.connected.node; i++) {
      ws.close();
      ws = await connect('lb-ws', ['websocket']);
    }
    expect(ws.connected.node).not.toBe(polling.connected.node);
    expect(relays.map(([name]) => name)).toContain(polling.connected.node);

    // A request and its answer are two more HTTP requests of the polling session: both reach its node.
    const answer = await polling.request<{ ok: boolean }>('unsubscribe', { channels: ['nothing'] });
    expect(answer.ok).toBe(true);
    const res = await post(
      `${lb.url}/v1/publish`,
      { event: 'bid', data: { amount: 7 }, users: ['lb-poll', 'lb-ws'] },
      { secret },
    );
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.online).toEqual({ users: 2, sockets: 2 });
    const [p] = await polling.waitForEvent('bid');
    const [w] = await ws.waitForEvent('bid');
    expect(p!.data).toEqual({ amount: 7 });
    expect(w!.meta).toMatchObject({ channel: 'user:lb-ws', id: res.body.id });
    expect(polling.socket.io.engine.transport.name).toBe('polling');
    expect(ws.socket.io.engine.transport.name).toBe('websocket');
  });

  it('upgrades a default client from long-polling to WebSocket through it', async () => {
    const c = await connect('lb-upgrade', ['polling', 'websocket']);
    await new Promise<void>((done) => {
      if (c.socket.io.engine.transport.name === 'websocket') done();
      else c.socket.io.engine.once('upgrade', () => done());
    });
    const res = await post(
      `${lb.url}/v1/publish`,
      { event: 'after-upgrade', users: ['lb-upgrade'] },
      { secret },
    );
    expect(res.status).toBe(200);
    await c.waitForEvent('after-upgrade');
  });

  it('pins a long-polling session with its cookie; without the cookie the session falls apart', async () => {
    // What the cookie is for: the same kind of client, minus the cookie jar, lands its
    // requests on nodes that do not know its session.
    let broken = 0;
    for (let i = 0; i < 10 && broken === 0; i++) {
      const socket = io(lb.url, {
        auth: { token: await mintToken(jwtSecret, `lb-nocookie-${i}`) },
        transports: ['polling'],
        reconnection: false,
        forceNew: true,
        withCredentials: false,
      });
      const outcome = await new Promise<string>((done) => {
        const timer = setTimeout(() => done('stayed'), 3000);
        socket.once('connect_error', () => {
          clearTimeout(timer);
          done('connect_error');
        });
        socket.once('disconnect', () => {
          clearTimeout(timer);
          done('disconnect');
        });
      });
      socket.close();
      if (outcome !== 'stayed') broken++;
    }
    expect(broken).toBeGreaterThan(0);
  });

  it('answers a cross-origin handshake so that a browser keeps the affinity cookie', async () => {
    const origin = 'https://app.example.com';
    const res = await fetch(`${lb.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin } });
    expect(res.status).toBe(200);
    expect(res.headers.get('set-cookie')).toMatch(/^pushrelay-node=relay\d; path=\/; HttpOnly/i);
    expect(res.headers.get('access-control-allow-origin')).toBe(origin);
    expect(res.headers.get('access-control-allow-credentials')).toBe('true');
  });

  it('serves the README tour on its port with the compose file’s secrets', async () => {
    // The compose file publishes Redis on the host's default port; here it is the test's.
    const stdout = await runTour({
      port: lb.port,
      publisherSecret: secret,
      jwtSecret,
      steps: ['curl', 'form', 'redis-cli'],
      redisPort: redis.port,
    });
    expect(stdout).toContain('connected as alice');
    expect(stdout).toContain('"online":{"users":1,"sockets":1}');
    expect(stdout).toContain('bid {"amount":120,"order":42} user:alice');
    expect(stdout).toContain('bid {"amount":125} user:alice');
    expect(stdout).toContain('bid {"amount":140} user:alice');
  });
});
