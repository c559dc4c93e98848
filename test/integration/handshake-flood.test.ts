import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { scrape } from '../helpers/metrics.js';
import { startInProcess } from '../helpers/nodes.js';
import { sleep } from '../helpers/wait.js';

// Clients that open engine.io handshakes and never authenticate must not lock
// token holders out: they hold no connection slot, one address can keep only
// a few of them open, and each is closed after the pre-auth timeout.

const FLOODER = '127.0.0.2'; // the whole 127/8 is loopback on Linux: a second client address

/** A bare engine.io WebSocket handshake that never sends Socket.IO's CONNECT; resolves once it is over. */
function bareHandshake(port: number): Promise<'open' | 'refused'> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`, {
      localAddress: FLOODER,
    });
    let opened = false;
    ws.on('message', () => {
      opened = true; // engine.io's open packet: the handshake was admitted
    });
    ws.on('error', () => {});
    ws.on('close', () => resolve(opened ? 'open' : 'refused'));
  });
}

describe('a flood of unauthenticated handshakes', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  const legit: TestClient[] = [];
  beforeAll(async () => {
    node = await startInProcess({
      PUSHRELAY_MAX_CONNECTIONS: '200',
      PUSHRELAY_PREAUTH_TIMEOUT_MS: '1500',
    });
  });
  afterAll(async () => {
    for (const c of legit) c.close();
    await node?.stop();
  });

  it('leaves token holders able to connect, and closes the handshakes that never authenticate', async () => {
    // 200 at once (the node's whole capacity under the old rule), then a steady
    // stream: every attempt is retried as soon as it ends.
    let stop = false;
    const outcomes = { open: 0, refused: 0 };
    const flooder = async () => {
      while (!stop) outcomes[await bareHandshake(node.port)]++;
    };
    const flood = Array.from({ length: 200 }, flooder);
    await sleep(1000);

    for (let i = 0; i < 10; i++) legit.push(await connectClient(node.url, await token(`legit${i}`)));
    expect(legit.filter((c) => c.socket.connected)).toHaveLength(10);

    stop = true;
    await Promise.all(flood);
    // The admitted bare handshakes did not outlive the pre-auth timeout (the
    // flood's last ones ended above), and the others were refused...
    expect(outcomes.open).toBeGreaterThan(0);
    expect(outcomes.refused).toBeGreaterThan(outcomes.open);
    // ...and the refusals did not spend the handshake rate everyone shares.
    const metrics = await scrape(node.url);
    expect(metrics.value('pushrelay_ratelimit_rejections_total', { scope: 'address' })).toBeGreaterThan(0);
    expect(metrics.value('pushrelay_ratelimit_rejections_total', { scope: 'connection' })).toBe(0);
    await sleep(100);
    expect(legit.every((c) => c.socket.connected)).toBe(true);
  }, 60_000);

  it('gives the last slots to the first handshakes to authenticate, and refuses the rest with a reason', async () => {
    const small = await startInProcess({ PUSHRELAY_MAX_CONNECTIONS: '2' });
    try {
      const base = `${small.url}/socket.io/?EIO=4&transport=polling`;
      // Three handshakes are admitted while no slot is taken...
      const sids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const open = await (await fetch(base)).text();
        sids.push((JSON.parse(open.slice(open.indexOf('{'))) as { sid: string }).sid);
      }
      // ...and then all three authenticate: two get the slots.
      const answers: string[] = [];
      for (const [i, sid] of sids.entries()) {
        const body = `40${JSON.stringify({ token: await token(`slot${i}`) })}`;
        expect((await fetch(`${base}&sid=${sid}`, { method: 'POST', body })).status).toBe(200);
        answers.push(await (await fetch(`${base}&sid=${sid}`)).text());
      }
      expect(answers.slice(0, 2).every((a) => a.startsWith('40{'))).toBe(true);
      expect(JSON.parse(answers[2]!.slice(2))).toEqual({
        message: 'this node is at its connection limit; retry (another node may take you)',
        data: { code: 'over_capacity' },
      });
    } finally {
      await small.stop();
    }
  });
});
