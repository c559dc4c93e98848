import { sign } from '../../src/http/auth.js';
import { KEY } from './env.js';

export interface HttpAnswer<T = Record<string, unknown>> {
  status: number;
  body: T;
  headers: Headers;
}

async function answer<T>(res: Response): Promise<HttpAnswer<T>> {
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON; tests assert on the text
  }
  return { status: res.status, body: body as T, headers: res.headers };
}

/** POST with Bearer auth (by default the test publisher key); an undefined body sends none, with no content type. */
export async function post<T = Record<string, unknown>>(
  url: string,
  body: unknown,
  {
    secret = KEY.secret as string,
    contentType = 'application/json',
    headers = {} as Record<string, string>,
  } = {},
): Promise<HttpAnswer<T>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      ...(body === undefined ? {} : { 'content-type': contentType }),
      ...(secret ? { authorization: `Bearer ${secret}` } : {}),
      ...headers,
    },
    body:
      body === undefined || typeof body === 'string' || body instanceof Uint8Array
        ? body
        : JSON.stringify(body),
  });
  return answer<T>(res);
}

export async function get<T = Record<string, unknown>>(
  url: string,
  { secret = KEY.secret as string, headers = {} as Record<string, string> } = {},
): Promise<HttpAnswer<T>> {
  const res = await fetch(url, {
    headers: { ...(secret ? { authorization: `Bearer ${secret}` } : {}), ...headers },
  });
  return answer<T>(res);
}

/** A request signed with HMAC-SHA256 instead of a Bearer secret. */
export async function signedRequest<T = Record<string, unknown>>(
  base: string,
  method: string,
  pathAndQuery: string,
  body: string,
  {
    key = KEY as { name: string; secret: string },
    timestamp = Math.floor(Date.now() / 1000),
    contentType = 'application/json',
    nonce = undefined as string | undefined,
    /** Sent instead of `nonce` (which is what is signed), to try swapping a signed nonce. */
    sentNonce = undefined as string | undefined,
  } = {},
): Promise<HttpAnswer<T>> {
  const ts = String(timestamp);
  const shownNonce = sentNonce ?? nonce;
  const res = await fetch(`${base}${pathAndQuery}`, {
    method,
    headers: {
      ...(body !== '' ? { 'content-type': contentType } : {}),
      'x-pushrelay-key': key.name,
      'x-pushrelay-timestamp': ts,
      ...(shownNonce !== undefined ? { 'x-pushrelay-nonce': shownNonce } : {}),
      'x-pushrelay-signature': sign(key.secret, ts, method, pathAndQuery, body, nonce),
    },
    body: body === '' ? undefined : body,
  });
  return answer<T>(res);
}

/**
 * Sends exactly these bytes on a new TCP connection (the request line and
 * headers as one string, CRLFs included) and reads one answer. With
 * `waitForContinue` the body goes out only after the server's
 * `100 Continue`, as curl does after `Expect: 100-continue`.
 */
export async function rawRequest(
  port: number,
  head: string,
  body: string | Buffer,
  { waitForContinue = false } = {},
): Promise<{ status: number; continued: boolean; body: Record<string, unknown> }> {
  const { connect } = await import('node:net');
  const socket = connect(port, '127.0.0.1');
  let received = Buffer.alloc(0);
  let continued = false;
  return new Promise((resolve, reject) => {
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer within 10 s')));
    socket.on('connect', () => {
      socket.write(head);
      if (!waitForContinue) socket.write(body);
    });
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      for (;;) {
        const end = received.indexOf('\r\n\r\n');
        if (end === -1) return;
        const lines = received.subarray(0, end).toString('latin1').split('\r\n');
        const status = Number(lines[0]!.split(' ')[1]);
        if (status === 100) {
          continued = true;
          received = received.subarray(end + 4);
          socket.write(body);
          continue;
        }
        const length = Number(/^content-length:\s*(\d+)$/im.exec(lines.join('\n'))?.[1] ?? 0);
        if (received.length < end + 4 + length) return;
        const text = received.subarray(end + 4, end + 4 + length).toString('utf8');
        socket.destroy();
        resolve({ status, continued, body: JSON.parse(text) as Record<string, unknown> });
        return;
      }
    });
  });
}
