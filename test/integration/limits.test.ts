import { afterEach, describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { startInProcess } from '../helpers/nodes.js';

type Answer = { ok: boolean; error?: { code: string; message: string } };

describe('per-node limits', () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it('answers a socket flooding requests with rate_limited, and serves it again after', async () => {
    const node = await startInProcess({ PUSHRELAY_SOCKET_RATE_LIMIT: '5' });
    cleanup.push(() => node.stop());
    const c = await connectClient(node.url, await token('flood', { channels: ['a'] }));
    cleanup.push(() => c.close());
    const answers = await Promise.all(
      Array.from({ length: 30 }, () => c.request<Answer>('unsubscribe', { channels: ['a'] })),
    );
    const limited = answers.filter((a) => !a.ok);
    expect(answers.filter((a) => a.ok).length).toBeLessThanOrEqual(11); // a burst of 10, and a token or so meanwhile
    expect(limited.length).toBeGreaterThanOrEqual(19);
    expect(limited[0]!.error).toEqual({
      code: 'rate_limited',
      message: 'more than 5 requests per second on this socket',
    });
    await new Promise((r) => setTimeout(r, 1100));
    expect((await c.request<Answer>('unsubscribe', { channels: ['a'] })).ok).toBe(true);
    expect(c.socket.connected).toBe(true);
  });

  it('refuses handshakes past the connection limit, with a reason', async () => {
    const node = await startInProcess({ PUSHRELAY_MAX_CONNECTIONS: '2' });
    cleanup.push(() => node.stop());
    for (let i = 0; i < 2; i++) {
      const c = await connectClient(node.url, await token(`u${i}`));
      cleanup.push(() => c.close());
    }
    const refused = await fetch(`${node.url}/socket.io/?EIO=4&transport=polling`);
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({
      code: 4,
      message: 'this node is at its connection limit; retry (another node may take you)',
    });
  });

  it('spreads a burst of handshakes over time instead of taking them all at once', async () => {
    const node = await startInProcess({ PUSHRELAY_CONNECT_RATE: '3' });
    cleanup.push(() => node.stop());
    const statuses = await Promise.all(
      Array.from(
        { length: 8 },
        async () => (await fetch(`${node.url}/socket.io/?EIO=4&transport=polling`)).status,
      ),
    );
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(4);
    expect(statuses.filter((s) => s === 403).length).toBeGreaterThanOrEqual(4);
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    expect(metrics).toMatch(/pushrelay_ratelimit_rejections_total\{scope="connection"\} [4-8]/);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await fetch(`${node.url}/socket.io/?EIO=4&transport=polling`)).status).toBe(200);
  });
});
