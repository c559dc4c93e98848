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

/**
 * A Socket.IO client over HTTP long-polling, at the protocol level, so it can stop polling:
 * the node then holds every packet for it in engine.io's write buffer.
 */
async function pollingClient(url: string, jwt: string) {
  const base = `${url}/socket.io/?EIO=4&transport=polling`;
  const open = await (await fetch(base)).text(); // 0{"sid":...}
  const { sid } = JSON.parse(open.slice(1)) as { sid: string };
  const at = `${base}&sid=${sid}`;
  const send = async (packet: string) => {
    const res = await fetch(at, { method: 'POST', body: packet });
    expect(await res.text()).toBe('ok');
  };
  /** Polls until a packet starting with `prefix` arrives (engine.io separates packets with \x1e). */
  const until = async (prefix: string) => {
    for (let i = 0; i < 20; i++) {
      const packets = (await (await fetch(at)).text()).split('\x1e');
      for (const p of packets) if (p === '2') await send('3'); // ping -> pong
      if (packets.some((p) => p.startsWith(prefix))) return;
    }
    throw new Error(`no ${prefix} packet`);
  };
  await send(`40${JSON.stringify({ token: jwt })}`);
  await until('40');
  return { at, send, until };
}

describe('slow consumers', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  beforeAll(async () => {
    node = await startInProcess({ PUSHRELAY_SOCKET_BUFFER_BYTES: String(256 * 1024) });
  });
  afterAll(() => node.stop());
  /** pushrelay_socket_slow_consumers_total of the node. */
  const cut = async () =>
    Number(
      /pushrelay_socket_slow_consumers_total (\d+)/.exec(
        await (await fetch(`${node.url}/metrics`)).text(),
      )?.[1] ?? 0,
    );
  /** A long-polling client of `user`, subscribed to `channel`. */
  const subscribedPoller = async (user: string, channel: string) => {
    const client = await pollingClient(node.url, await token(user, { channels: [channel] }));
    await client.send(`420${JSON.stringify(['subscribe', { channels: [channel] }])}`);
    await client.until('430');
    return client;
  };

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

    await waitFor(async () => (await cut()) === 1);
    const presence = await get(`${node.url}/v1/users/slowpoke/presence`, { secret: READ_KEY.secret });
    expect(presence.body).toMatchObject({ online: false, sockets: 0 });
    expect(fast.socket.connected).toBe(true);
    slow.tcp.resume();
    await waitFor(() => slow.ws.readyState === WebSocket.CLOSED);
    fast.close();
  });

  it('disconnects a long-polling client that stops polling, whatever path its packets take', async () => {
    const before = await cut();
    const slow = await subscribedPoller('poller', 'firehose2');
    // No more polls: everything for it waits in the node (not in the kernel, as for a WebSocket).
    const chunk = 'y'.repeat(60_000);
    for (let i = 0; i < 20; i++) {
      const res = await post(`${node.url}/v1/publish`, {
        event: 'blob',
        data: { i, chunk },
        channels: ['firehose2'],
      });
      expect(res.status).toBe(200);
    }
    await waitFor(async () => (await cut()) === before + 1);
    const presence = await get(`${node.url}/v1/users/poller/presence`, { secret: READ_KEY.secret });
    expect(presence.body).toMatchObject({ online: false, sockets: 0 });
    // Its session and what was held for it are gone: the next poll is refused.
    const poll = await fetch(slow.at);
    expect(poll.status).toBe(400);
  });

  it('leaves alone a long-polling client that polls, however much it is sent', async () => {
    const before = await cut();
    const client = await subscribedPoller('steady', 'firehose3');
    const chunk = 'z'.repeat(60_000);
    let got = 0;
    // Three messages between polls: 180 KB held, under the 256 KiB bound.
    for (let round = 0; round < 8; round++) {
      for (let i = 0; i < 3; i++) {
        const res = await post(`${node.url}/v1/publish`, {
          event: 'blob',
          data: { chunk },
          channels: ['firehose3'],
        });
        expect(res.status).toBe(200);
      }
      await new Promise((r) => setTimeout(r, 300)); // a sweep runs while 180 KB wait for this client
      while (got < (round + 1) * 3) {
        const packets = (await (await fetch(client.at)).text()).split('\x1e');
        for (const p of packets) if (p === '2') await client.send('3');
        got += packets.filter((p) => p.startsWith('42["blob"')).length;
      }
    }
    expect(got).toBe(24);
    expect(await cut()).toBe(before);
  });
});
