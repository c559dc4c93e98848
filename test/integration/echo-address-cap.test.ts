import Echo from 'laravel-echo';
import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { scrape } from '../helpers/metrics.js';
import { startInProcess } from '../helpers/nodes.js';
import { waitFor } from '../helpers/wait.js';

// Laravel Echo sockets carry no token, so once connected nothing but the
// node's whole PUSHRELAY_MAX_CONNECTIONS stopped one client address from
// taking every slot and holding it. PUSHRELAY_ECHO_MAX_PER_ADDRESS caps them
// per address, and the count is given back as they leave.

const OTHER = '127.0.0.2'; // the whole 127/8 is loopback on Linux: a second client address
const CAP = 3;

interface EchoTab {
  readonly echo: Echo<'socket.io'>;
  readonly socket: Socket;
  /** 'connected', or the `code` of the connect error the relay answered. */
  readonly outcome: Promise<string>;
}

/** A real laravel-echo client, as a browser tab opens it (no token), from `localAddress`. */
function echoTab(url: string, opts: { localAddress?: string; forwardedFor?: string } = {}): EchoTab {
  const echo = new Echo<'socket.io'>({
    broadcaster: 'socket.io',
    client: io,
    host: url,
    transports: ['websocket'],
    auth: { headers: {} },
    localAddress: opts.localAddress,
    extraHeaders: opts.forwardedFor ? { 'X-Forwarded-For': opts.forwardedFor } : {},
    forceNew: true,
  } as never);
  const socket = (echo.connector as unknown as { socket: Socket }).socket;
  const outcome = new Promise<string>((resolve) => {
    socket.once('connect', () => resolve('connected'));
    socket.once('connect_error', (err: Error & { data?: { code?: string } }) =>
      resolve(err.data?.code ?? err.message),
    );
  });
  return { echo, socket, outcome };
}

/**
 * An engine.io WebSocket spoken by hand, for Socket.IO packets a client
 * library would not send: answers pings, keeps every other frame, and
 * resolves once the open packet came.
 */
async function rawConnection(port: number): Promise<{ ws: WebSocket; frames: string[] }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`);
  const frames: string[] = [];
  ws.on('message', (data) => {
    const frame = String(data);
    if (frame === '2')
      ws.send('3'); // engine.io ping
    else frames.push(frame);
  });
  await waitFor(() => frames[0]?.startsWith('0') === true, { what: 'the engine.io open packet' });
  return { ws, frames };
}

describe('Laravel Echo sockets per client address', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  const tabs: EchoTab[] = [];
  const natives: TestClient[] = [];
  const open = async (opts?: Parameters<typeof echoTab>[1]) => {
    const tab = echoTab(node.url, opts);
    tabs.push(tab);
    return { tab, outcome: await tab.outcome };
  };
  const refusals = async () =>
    (await scrape(node.url)).value('pushrelay_ratelimit_rejections_total', { scope: 'echo_address' });

  beforeAll(async () => {
    node = await startInProcess({
      PUSHRELAY_ECHO: 'on',
      PUSHRELAY_ECHO_MAX_PER_ADDRESS: String(CAP),
      PUSHRELAY_MAX_CONNECTIONS: '100',
    });
  });
  afterAll(async () => {
    for (const t of tabs) t.echo.disconnect();
    for (const c of natives) c.close();
    await node?.stop();
  });

  it('refuses an address its Echo sockets past the cap, not other addresses nor token holders, and takes new ones as old ones leave', async () => {
    const first: EchoTab[] = [];
    for (let i = 0; i < CAP; i++) {
      const { tab, outcome } = await open();
      expect(outcome).toBe('connected');
      first.push(tab);
    }
    expect(await refusals()).toBe(0);

    // One more from the same address: refused with the typed error, and counted.
    expect((await open()).outcome).toBe('rate_limited');
    expect(await refusals()).toBe(1);

    // Another address has a cap of its own, and a token holder is not an Echo socket.
    expect((await open({ localAddress: OTHER })).outcome).toBe('connected');
    const native = await connectClient(node.url, await token('native'));
    natives.push(native);
    expect(native.socket.connected).toBe(true);
    expect((await scrape(node.url)).value('pushrelay_echo_addresses')).toBe(2);

    // One leaves: once the node has seen it go, the address may open one more, and only one.
    const sockets = () => node.relay.io.of('/').sockets.size;
    const before = sockets();
    first[0]!.echo.disconnect();
    await waitFor(() => sockets() === before - 1, { what: 'the node to see the Echo socket go' });
    expect((await open()).outcome).toBe('connected');
    expect((await open()).outcome).toBe('rate_limited');
    expect(await refusals()).toBe(2);

    // Everyone leaves: no address is left counted.
    for (const t of tabs) t.echo.disconnect();
    native.close();
    await waitFor(() => sockets() === 0, { what: 'every socket gone' });
    expect((await scrape(node.url)).value('pushrelay_echo_addresses')).toBe(0);
    // The cap is whole again.
    for (let i = 0; i < CAP; i++) expect((await open()).outcome).toBe('connected');
    expect((await open()).outcome).toBe('rate_limited');
  }, 30_000);

  it('gives the count back when a socket leaves while its engine connection stays, and all of a connection’s sockets when it closes', async () => {
    for (const t of tabs) t.echo.disconnect();
    const sockets = () => node.relay.io.of('/').sockets.size;
    await waitFor(() => sockets() === 0, { what: 'every socket gone' });
    // Socket.IO's own packets over one engine.io WebSocket: CONNECT '/' (no
    // token: Echo) up to the cap and once more, then DISCONNECT with the
    // connection kept open, then the connection closed.
    const { ws, frames } = await rawConnection(node.port);
    for (let i = 0; i <= CAP; i++) ws.send('40{}');
    await waitFor(() => frames.length === CAP + 2, { what: 'an answer to every CONNECT' });
    expect(frames.filter((f) => f.startsWith('40'))).toHaveLength(CAP);
    expect(frames.filter((f) => f.startsWith('44')).map((f) => JSON.parse(f.slice(2)).data.code)).toEqual([
      'rate_limited',
    ]);
    expect(sockets()).toBe(CAP);
    // DISCONNECT '/' ends the connection's latest socket for '/' (Socket.IO keeps one per namespace name).
    ws.send('41');
    await waitFor(() => sockets() === CAP - 1, { what: 'the socket to leave' });
    expect(ws.readyState).toBe(WebSocket.OPEN);
    ws.send('40{}');
    ws.send('40{}');
    await waitFor(() => frames.length === CAP + 4, { what: 'the answers to two new CONNECTs' });
    expect(frames.slice(-2).map((f) => f.slice(0, 2))).toEqual(['40', '44']);
    expect(sockets()).toBe(CAP);
    ws.close();
    await waitFor(() => sockets() === 0, { what: 'the last socket gone' });
    expect((await scrape(node.url)).value('pushrelay_echo_addresses')).toBe(0);
  }, 30_000);
  it('counts a tokenless CONNECT sent along with a token one on the same connection (whose socket lets go of the request)', async () => {
    const sockets = () => node.relay.io.of('/').sockets.size;
    await waitFor(() => sockets() === 0, { what: 'every socket gone' });
    const { ws, frames } = await rawConnection(node.port);
    // Socket.IO takes a second CONNECT '/' only while the first is still in its middlewares.
    ws.send(`40${JSON.stringify({ token: await token('dora') })}`);
    ws.send('40{}');
    await waitFor(() => frames.filter((f) => f.startsWith('40')).length === 2, {
      what: 'both CONNECTs answered',
    });
    expect(frames.some((f) => f.startsWith('42["pushrelay:connected"'))).toBe(true);
    expect(sockets()).toBe(2);
    expect((await scrape(node.url)).value('pushrelay_echo_addresses')).toBe(1);
    ws.close();
    await waitFor(() => sockets() === 0, { what: 'both sockets gone' });
    expect((await scrape(node.url)).value('pushrelay_echo_addresses')).toBe(0);
  }, 30_000);
});

describe('Laravel Echo sockets per client address behind a proxy', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  const tabs: EchoTab[] = [];
  beforeAll(async () => {
    node = await startInProcess({
      PUSHRELAY_ECHO: 'on',
      PUSHRELAY_ECHO_MAX_PER_ADDRESS: '1',
      PUSHRELAY_TRUST_PROXY: '127.0.0.1',
    });
  });
  afterAll(async () => {
    for (const t of tabs) t.echo.disconnect();
    await node?.stop();
  });

  it('counts each client behind the trusted proxy under its own address', async () => {
    const open = (forwardedFor: string) => {
      const tab = echoTab(node.url, { forwardedFor });
      tabs.push(tab);
      return tab.outcome;
    };
    expect(await open('203.0.113.1')).toBe('connected');
    expect(await open('203.0.113.2')).toBe('connected');
    expect(await open('203.0.113.1')).toBe('rate_limited');
    expect((await scrape(node.url)).value('pushrelay_echo_addresses')).toBe(2);
  }, 30_000);
});

describe('PUSHRELAY_ECHO_MAX_PER_ADDRESS=0', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  const tabs: EchoTab[] = [];
  beforeAll(async () => {
    node = await startInProcess({ PUSHRELAY_ECHO: 'on', PUSHRELAY_ECHO_MAX_PER_ADDRESS: '0' });
  });
  afterAll(async () => {
    for (const t of tabs) t.echo.disconnect();
    await node?.stop();
  });

  it('leaves Echo sockets bounded only by the node', async () => {
    for (let i = 0; i < 5; i++) {
      const tab = echoTab(node.url);
      tabs.push(tab);
      expect(await tab.outcome).toBe('connected');
    }
    expect((await scrape(node.url)).value('pushrelay_echo_addresses')).toBe(0);
  }, 30_000);
});
