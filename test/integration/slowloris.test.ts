import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { KEY, token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { startInProcess } from '../helpers/nodes.js';

// Slowloris: a client that sends its request a byte at a time holds a socket
// (and a file descriptor) for as long as it likes unless the server sets a
// deadline. Each attack below keeps trickling well past the deadline; the node
// must answer 408 and close the connection, and still serve everyone else.

const TIMEOUT_MS = 1000;
/** The deadline, plus Node's check interval (a quarter of it), plus slack for a loaded machine. */
const BOUND_MS = 6000;

interface Trickled {
  /** Everything the server sent back. */
  answer: string;
  /** Milliseconds from the first byte sent to the server closing the socket. */
  closedAfterMs: number;
}

/** Sends `head` at once, then one byte of `rest` every 100 ms, until the server closes (or BOUND_MS + 4 s). */
function trickle(port: number, head: string, rest: string): Promise<Trickled> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(port, '127.0.0.1');
    const started = Date.now();
    let answer = '';
    let i = 0;
    let timer: NodeJS.Timeout | undefined;
    const giveUp = setTimeout(() => {
      clearInterval(timer);
      socket.destroy();
      reject(new Error(`still open after ${BOUND_MS + 4000} ms; got ${JSON.stringify(answer)}`));
    }, BOUND_MS + 4000);
    socket.on('connect', () => {
      socket.write(head);
      timer = setInterval(() => {
        if (!socket.writable) return;
        socket.write(rest[i % rest.length]!);
        i++;
      }, 100);
    });
    socket.on('data', (chunk) => {
      answer += chunk.toString();
    });
    socket.on('error', () => {
      // The server's reset after its 408 ends the attack as well as a FIN does.
    });
    socket.on('close', () => {
      clearInterval(timer);
      clearTimeout(giveUp);
      resolve({ answer, closedAfterMs: Date.now() - started });
    });
  });
}

describe('slowloris', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  beforeAll(async () => {
    node = await startInProcess({
      PUSHRELAY_REQUEST_TIMEOUT_MS: String(TIMEOUT_MS),
      PUSHRELAY_HEADERS_TIMEOUT_MS: String(TIMEOUT_MS),
    });
  });
  afterAll(async () => {
    await node?.stop();
  });

  it('a body trickled behind only X-Pushrelay-Key is answered 408 and closed within the deadline', async () => {
    const sockets = await connectClient(node.url, await token('bystander'));
    const head = [
      'POST /v1/publish HTTP/1.1',
      'Host: relay',
      `X-Pushrelay-Key: ${KEY.name}`,
      'Content-Type: application/json',
      'Content-Length: 60000',
      '',
      '',
    ].join('\r\n');
    const attacks = await Promise.all(
      Array.from({ length: 5 }, () => trickle(node.port, head, '{"event":"x","data":"aaaa')),
    );
    for (const a of attacks) {
      expect(a.closedAfterMs).toBeLessThan(BOUND_MS);
      expect(a.answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
      expect(JSON.parse(a.answer.slice(a.answer.indexOf('\r\n\r\n') + 4))).toEqual({
        error: {
          code: 'request_timeout',
          message:
            'the request did not arrive in time (PUSHRELAY_REQUEST_TIMEOUT_MS); the connection is closed',
        },
      });
    }
    // The node kept serving, and its WebSocket clients outlived the HTTP deadline untouched.
    const res = await post(`${node.url}/v1/publish`, { event: 'still', users: ['bystander'] });
    expect(res.status).toBe(200);
    await sockets.waitForEvent('still');
    expect((await scrape(node.url)).value('pushrelay_http_errors_total', { code: 'request_timeout' })).toBe(
      5,
    );
    sockets.close();
  });

  it('headers trickled a byte at a time are cut off too', async () => {
    const attack = await trickle(
      node.port,
      'POST /v1/publish HTTP/1.1\r\nHost: relay\r\n',
      'X-Pushrelay-Key: app\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
    );
    expect(attack.closedAfterMs).toBeLessThan(BOUND_MS);
    expect(attack.answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('a long-polling client idle past the deadline stays connected', async () => {
    const polling = await connectClient(node.url, await token('poller'), { transports: ['polling'] });
    await new Promise((r) => setTimeout(r, TIMEOUT_MS * 2.5));
    const res = await post(`${node.url}/v1/publish`, { event: 'late', users: ['poller'] });
    expect(res.body).toMatchObject({ online: { users: 1 } });
    await polling.waitForEvent('late');
    polling.close();
  });

  it('answers what Node’s parser refuses in the relay’s error format: a garbled request line, huge headers', async () => {
    const send = (bytes: string) =>
      new Promise<string>((resolve) => {
        const socket = connect(node.port, '127.0.0.1', () => socket.write(bytes));
        let answer = '';
        socket.on('data', (c) => {
          answer += c.toString();
        });
        socket.on('error', () => {});
        socket.on('close', () => resolve(answer));
      });
    const body = (answer: string) => JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
    const garbled = await send('P\x00ST /v1/publish HTTP/1.1\r\nHost: relay\r\n\r\n');
    expect(garbled).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(body(garbled)).toEqual({ error: { code: 'bad_request', message: 'the request is malformed' } });
    const huge = await send(`GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Pad: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(huge).toMatch(/^HTTP\/1\.1 431 /);
    expect(body(huge).error.code).toBe('headers_too_large');
  });

  it('refuses a headers deadline longer than the request deadline', async () => {
    const { loadConfig } = await import('../../src/config/index.js');
    expect(() =>
      loadConfig({ PUSHRELAY_REQUEST_TIMEOUT_MS: '5000', PUSHRELAY_HEADERS_TIMEOUT_MS: '6000' }),
    ).toThrow(/PUSHRELAY_HEADERS_TIMEOUT_MS: 6000 is more than PUSHRELAY_REQUEST_TIMEOUT_MS \(5000\)/);
  });
});
