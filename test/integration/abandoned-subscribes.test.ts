import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

// Flaky mobile clients send a large subscribe and drop the connection before
// it is answered. Whatever the node set up for those channels must be given
// up like the channels of a socket that left normally.

const SOCKETS = 40;
const CHANNELS = 128;

describe('sockets that leave in the middle of a subscribe', () => {
  let redis: RedisServer;
  let node: Awaited<ReturnType<typeof startInProcess>>;
  beforeAll(async () => {
    redis = await startRedis();
    node = await startInProcess({ REDIS_URL: redis.url });
  });
  afterAll(async () => {
    await node?.stop();
    await redis?.stop();
  });

  /** Delivery subscriptions the node holds in Redis for the test's channels. */
  const held = async () => {
    const r = redis.client();
    const [plain, sharded] = await Promise.all([
      r.call('PUBSUB', 'CHANNELS', '*leak:*') as Promise<string[]>,
      r.call('PUBSUB', 'SHARDCHANNELS', '*leak:*') as Promise<string[]>,
    ]);
    return plain.length + sharded.length;
  };

  it('leave no channel subscribed in Redis once they are gone', async () => {
    const jwt = await token('flaky', { channels: ['leak:*'] });
    const sockets: Socket[] = [];
    for (let i = 0; i < SOCKETS; i++) {
      const socket = io(node.url, {
        auth: { token: jwt },
        transports: ['websocket'],
        reconnection: false,
        forceNew: true,
      });
      sockets.push(socket);
    }
    await Promise.all(
      sockets.map((s) => new Promise<void>((resolve) => s.once('pushrelay:connected', () => resolve()))),
    );
    // Every socket asks for 128 channels of its own and leaves while the
    // node is still setting them up (a packet after the disconnect would
    // never reach a handler at all).
    sockets.forEach((s, i) => {
      s.emit('subscribe', { channels: Array.from({ length: CHANNELS }, (_, c) => `leak:${i}:${c}`) });
      setTimeout(() => s.disconnect(), 5 + (i % 10));
    });
    // The subscribes did reach Redis (the attack is real)...
    await waitFor(async () => (await held()) > 0, { what: 'subscriptions made', timeoutMs: 10_000 });
    // ...and all of them are given up after the node's linger period (5 s).
    await waitFor(async () => (await held()) === 0, {
      what: 'every abandoned channel unsubscribed',
      timeoutMs: 20_000,
    });

    // The node still serves the same channels to a socket that stays.
    const stays = await connectClient(node.url, jwt);
    const answer = await stays.request<{ ok: boolean }>('subscribe', { channels: ['leak:0:0'] });
    expect(answer.ok).toBe(true);
    await post(`${node.url}/v1/publish`, { event: 'still', channels: ['leak:0:0'] });
    await stays.waitForEvent('still');
    expect(await held()).toBeGreaterThan(0);
    stays.close();
  }, 60_000);
});
