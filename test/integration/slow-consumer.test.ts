import type { Socket as NetSocket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connectClient } from '../helpers/clients.js';
import { READ_KEY, token } from '../helpers/env.js';
import { get, post } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { waitFor } from '../helpers/wait.js';

/** A Socket.IO client at the protocol level, so it can stop reading its TCP socket. */
async function rawClient(url: string, jwt: string): Promise<{ ws: WebSocket; tcp: NetSocket }> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
  await new Promise<void>((resolve, reject) => {
    ws.on('error', reject);
    ws.on('message', (raw) => {
      const text = raw.toString();
      if (text.startsWith('0'))
        ws.send(`40${JSON.stringify({ token: jwt })}`); // engine.io open -> Socket.IO connect
      else if (text.startsWith('40')) resolve();
      else if (text === '2') ws.send('3'); // ping -> pong
    });
  });
  return { ws, tcp: (ws as unknown as { _socket: NetSocket })._socket };
}

describe('slow consumers', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  beforeAll(async () => {
    node = await startInProcess({ PUSHRELAY_SOCKET_BUFFER_BYTES: String(256 * 1024) });
  });
  afterAll(() => node.stop());

  it('disconnects a socket that stops reading, and leaves the others alone', async () => {
    const slow = await rawClient(node.url, await token('slowpoke', { channels: ['firehose'] }));
    slow.ws.send(`420${JSON.stringify(['subscribe', { channels: ['firehose'] }])}`);
    const fast = await connectClient(node.url, await token('quick', { channels: ['firehose'] }));
    await fast.request('subscribe', { channels: ['firehose'] });
    await waitFor(async () => {
      const p = await get<{ sockets: number }>(`${node.url}/v1/channels/firehose/presence`, {
        secret: READ_KEY.secret,
      });
      return p.body.sockets === 2;
    });
    slow.tcp.pause(); // the kernel buffers fill, then the node's

    const chunk = 'x'.repeat(60_000);
    const total = 200; // 12 MB: far past the kernel's buffers and the 256 KiB bound
    for (let i = 0; i < total; i++) {
      const res = await post(`${node.url}/v1/publish`, {
        event: 'blob',
        data: { i, chunk },
        channels: ['firehose'],
      });
      expect(res.status).toBe(200);
    }
    await fast.waitForEvent('blob', total, 20_000);
    expect(fast.events('blob').map((e) => (e.data as { i: number }).i)).toEqual([...Array(total).keys()]);

    const metrics = async () => (await fetch(`${node.url}/metrics`)).text();
    await waitFor(async () => /pushrelay_socket_slow_consumers_total 1\b/.test(await metrics()));
    const presence = await get(`${node.url}/v1/users/slowpoke/presence`, { secret: READ_KEY.secret });
    expect(presence.body).toMatchObject({ online: false, sockets: 0 });
    expect(fast.socket.connected).toBe(true);
    slow.tcp.resume();
    await waitFor(() => slow.ws.readyState === WebSocket.CLOSED);
    fast.close();
  });
});
