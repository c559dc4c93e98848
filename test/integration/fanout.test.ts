import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { waitFor } from '../helpers/wait.js';

// Deliveries are written straight to a socket's WebSocket as one prebuilt frame
// when engine.io has nothing queued for it, and through engine.io otherwise
// (long polling, a send still in flight). These check what a client depends on
// across both: every byte of every size of message, in order, none lost.

describe('fan-out to WebSocket and long-polling sockets (standalone)', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  let direct: TestClient;
  let polling: TestClient;
  beforeAll(async () => {
    node = await startInProcess({
      PUSHRELAY_MAX_PAYLOAD_BYTES: String(512 * 1024),
      // Order is what these check, not the slow-consumer limit: a long-polling client on a busy
      // machine can fall a few hundred kilobytes behind a burst.
      PUSHRELAY_SOCKET_BUFFER_BYTES: String(64 * 1024 * 1024),
    });
    direct = await connectClient(node.url, await token('fan'));
    polling = await connectClient(node.url, await token('fan'), { transports: ['polling'] });
  });
  afterAll(async () => {
    direct.close();
    polling.close();
    await node.stop();
  });

  it('delivers messages of every frame length intact to both transports', async () => {
    const sizes = [0, 10, 100, 1_000, 60_000, 70_000, 300_000];
    for (const size of sizes) {
      const res = await post(`${node.url}/v1/publish`, {
        event: 'sized',
        data: { size, text: 'é'.repeat(size / 2) },
        users: ['fan'],
      });
      expect(res.status).toBe(200);
    }
    for (const client of [direct, polling]) {
      const got = await client.waitForEvent('sized', sizes.length);
      expect(got.map((r) => (r.data as { size: number }).size)).toEqual(sizes);
      for (const r of got) {
        const { size, text } = r.data as { size: number; text: string };
        expect(text).toBe('é'.repeat(size / 2));
      }
    }
  });

  it('keeps the order of bursts while the socket also takes acknowledgements through engine.io', async () => {
    const before = direct.events('seq').length;
    const bursts = 20;
    const perBurst = 100;
    const acks: Promise<unknown>[] = [];
    for (let b = 0; b < bursts; b++) {
      const messages = Array.from({ length: perBurst }, (_, i) => ({
        event: 'seq',
        data: { n: b * perBurst + i, pad: 'x'.repeat(200) },
        users: ['fan'],
      }));
      const res = await post(`${node.url}/v1/batch`, { messages });
      expect(res.status).toBe(200);
      // Engine.io packets (acknowledgements) interleaved with the directly written frames.
      acks.push(direct.request('subscribe', { channels: [] }).catch((e: Error) => e));
      acks.push(polling.request('subscribe', { channels: [] }).catch((e: Error) => e));
    }
    await Promise.all(acks);
    for (const client of [direct, polling]) {
      const got = await waitFor(
        () => {
          const seq = client.events('seq').slice(client === direct ? before : 0);
          if (client.events('pushrelay:disconnect').length > 0 || !client.socket.connected) {
            throw new Error(`disconnected: ${JSON.stringify(client.events('pushrelay:disconnect'))}`);
          }
          return seq.length >= bursts * perBurst ? seq : undefined;
        },
        { what: 'every burst message', timeoutMs: 30_000 },
      );
      expect(got.map((r) => (r.data as { n: number }).n)).toEqual(
        Array.from({ length: bursts * perBurst }, (_, i) => i),
      );
      const offsets = got.map((r) => r.meta!.offset);
      for (let i = 1; i < offsets.length; i++) expect(offsets[i]).toBe(offsets[i - 1]! + 1);
    }
  });
});
