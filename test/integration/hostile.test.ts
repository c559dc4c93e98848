import { generateKeyPairSync } from 'node:crypto';
import { connect } from 'node:net';
import { SignJWT } from 'jose';
import { io } from 'socket.io-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connectClient, connectError, type TestClient } from '../helpers/clients.js';
import { KEY, token } from '../helpers/env.js';
import { post, signedRequest } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

// The hostile-input suite: one test per attack, each asserting the exact
// answer, then (afterEach) that the node still delivers a real publish and
// that Object.prototype was not touched. Nodes run in this process, so a
// polluted prototype would show here.

const PROTOTYPE_KEYS = Object.getOwnPropertyNames(Object.prototype).sort();
const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PUBLIC_PEM = publicKey.export({ type: 'spki', format: 'pem' }).toString();
const AUDIENCE = 'pushrelay-test';
const ISSUER = 'https://auth.example';

type Node = Awaited<ReturnType<typeof startInProcess>>;

/** An HTTP request written byte for byte, so headers reach the relay exactly as an attacker sends them. */
function rawRequest(
  port: number,
  head: string,
  body: Buffer | string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('end', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const [status = '', ...rest] = text.split('\r\n');
      resolve({
        status: Number(status.split(' ')[1]),
        body: rest.join('\r\n').split('\r\n\r\n').slice(1).join(''),
      });
    });
    const payload = Buffer.isBuffer(body) ? body : Buffer.from(body);
    socket.write(`${head}\r\nContent-Length: ${payload.length}\r\nConnection: close\r\n\r\n`);
    socket.write(payload);
  });
}

function rsToken(claims: Record<string, unknown>, edit?: (jwt: SignJWT) => SignJWT): Promise<string> {
  let jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256' })
    .setSubject('alice')
    .setAudience(AUDIENCE)
    .setIssuer(ISSUER)
    .setExpirationTime('10m');
  if (edit) jwt = edit(jwt);
  return jwt.sign(privateKey);
}

describe('hostile input', () => {
  let node: Node;
  let rsa: Node;
  let witness: TestClient;
  let n = 0;

  beforeAll(async () => {
    node = await startInProcess({ PUSHRELAY_CORS_ORIGINS: 'https://app.example' });
    rsa = await startInProcess({
      PUSHRELAY_JWT_SECRET: undefined,
      PUSHRELAY_JWT_PUBLIC_KEY: PUBLIC_PEM,
      PUSHRELAY_JWT_AUDIENCE: AUDIENCE,
      PUSHRELAY_JWT_ISSUER: ISSUER,
    });
    witness = await connectClient(node.url, await token('witness'));
  });
  afterEach(async () => {
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(PROTOTYPE_KEYS);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    for (const target of [node, rsa]) expect((await fetch(`${target.url}/healthz`)).status).toBe(200);
    const event = `alive${++n}`;
    expect((await post(`${node.url}/v1/publish`, { event, users: ['witness'] })).status).toBe(200);
    await witness.waitForEvent(event);
  });
  afterAll(async () => {
    witness.close();
    await node.stop();
    await rsa.stop();
  });

  const publish = (body: unknown, contentType = 'application/json') =>
    post(`${node.url}/v1/publish`, body, { contentType });
  const error = (code: string) => ({ error: { code, message: expect.any(String) } });

  it('a JSON body carrying __proto__, at the top or deep in data', async () => {
    for (const body of [
      '{"event":"x","users":["a"],"__proto__":{"polluted":"yes"}}',
      '{"event":"x","users":["a"],"data":{"a":[{"__proto__":{"polluted":"yes"}}]}}',
      '{"event":"x","users":["a"],"data":{"constructor":{"prototype":{"polluted":"yes"}}}}',
    ]) {
      const res = await publish(body);
      expect(res.status).toBe(400);
      expect(res.body).toEqual(error('forbidden_key'));
    }
  });

  it('a form body carrying __proto__', async () => {
    for (const body of ['event=x&users=a&__proto__[polluted]=yes', 'event=x&users=a&__proto__=yes']) {
      const res = await publish(body, 'application/x-www-form-urlencoded');
      expect(res.status).toBe(400);
      expect(res.body).toEqual(error('forbidden_key'));
    }
    const nested = await publish(
      'event=x&users=a&data=%7B%22__proto__%22%3A%7B%22polluted%22%3A1%7D%7D',
      'application/x-www-form-urlencoded',
    );
    expect(nested.body).toEqual(error('forbidden_key'));
  });

  it('10,000-deep nesting, in JSON and in a form field', async () => {
    const deep = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;
    const json = await publish(`{"event":"x","users":["a"],"data":${deep}}`);
    expect(json.status).toBe(400);
    expect(json.body).toEqual({
      error: { code: 'too_deep', message: 'the body is nested deeper than 32 levels' },
    });
    const form = await publish(
      `event=x&users=a&data=${encodeURIComponent(deep)}`,
      'application/x-www-form-urlencoded',
    );
    expect(form.body).toEqual(error('too_deep'));
  });

  it('Content-Type variants: leading space, tab, trailing junk, another charset', async () => {
    const head = (ct: string) =>
      `POST /v1/publish HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer ${KEY.secret}\r\nContent-Type:${ct}`;
    const body = '{"event":"x","users":["a"]}';
    const cases: [string, number, string | undefined][] = [
      [' application/json', 200, undefined],
      ['\tapplication/json', 200, undefined],
      [' application/json ; charset=utf-8', 200, undefined],
      [' application/json\tjunk', 415, 'unsupported_media_type'],
      [' application/json junk', 415, 'unsupported_media_type'],
      [' application/jsonx', 415, 'unsupported_media_type'],
      [' application/json, text/plain', 415, 'unsupported_media_type'],
      [' application/json; charset=latin1', 415, 'unsupported_media_type'],
      [' text/plain', 415, 'unsupported_media_type'],
    ];
    for (const [ct, status, code] of cases) {
      const res = await rawRequest(node.port, head(ct), body);
      expect([JSON.stringify(ct), res.status]).toEqual([JSON.stringify(ct), status]);
      if (code) expect(JSON.parse(res.body).error.code).toBe(code);
    }
  });

  it('an oversized HTTP body', async () => {
    const res = await publish({ event: 'x', users: ['a'], data: 'y'.repeat(70_000) });
    expect(res.status).toBe(413);
    expect(res.body).toEqual({
      error: { code: 'payload_too_large', message: 'the body is larger than 65536 bytes' },
    });
  });

  for (const transport of ['websocket', 'polling'] as const) {
    it(`an oversized socket packet over ${transport}`, async () => {
      const client = await connectClient(node.url, await token('bigmouth', { channels: ['x'] }), {
        transports: [transport],
      });
      const gone = new Promise<string>((resolve) => client.socket.once('disconnect', resolve));
      client.socket.emit('subscribe', { channels: ['x'], padding: 'z'.repeat(70_000) });
      expect(await gone).toMatch(/transport (close|error)/);
      client.close();
    });
  }

  it('invalid UTF-8, in JSON and in a form', async () => {
    const bad = Buffer.concat([
      Buffer.from('{"event":"x","users":["'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"]}'),
    ]);
    const res = await post(`${node.url}/v1/publish`, bad);
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: { code: 'invalid_encoding', message: 'the body is not valid UTF-8' } });
    const form = Buffer.concat([Buffer.from('event=x&users='), Buffer.from([0xff, 0xfe])]);
    expect((await publish(form, 'application/x-www-form-urlencoded')).body).toEqual(
      error('invalid_encoding'),
    );
  });

  it('a flood of array fields', async () => {
    const form = await publish(`event=x&${'users[]=a&'.repeat(1001)}`, 'application/x-www-form-urlencoded');
    expect(form.status).toBe(400);
    expect(form.body).toEqual({ error: { code: 'invalid_body', message: 'more than 1000 form fields' } });
    const users = await publish({ event: 'x', users: Array(10_001).fill('a') });
    expect(users.status).toBe(400);
    expect(users.body).toEqual({
      error: { code: 'invalid_body', message: 'body.users must NOT have more than 10000 items' },
    });
  });

  it('an unsigned token (alg: none) against an RS256 node', async () => {
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const claims = { sub: 'alice', aud: AUDIENCE, iss: ISSUER, exp: Math.floor(Date.now() / 1000) + 600 };
    const err = await connectError(rsa.url, { token: `${enc({ alg: 'none' })}.${enc(claims)}.` });
    expect(err.data?.code).toBe('token_invalid');
  });

  it('an HS256 token signed with the RSA public key (algorithm confusion)', async () => {
    const forged = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setAudience(AUDIENCE)
      .setIssuer(ISSUER)
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(PUBLIC_PEM));
    const err = await connectError(rsa.url, { token: forged });
    expect(err.data?.code).toBe('token_invalid');
    expect(err.message).toBe('the token is not valid: its algorithm is not allowed');
  });

  it('a wrong audience, and a wrong issuer', async () => {
    const aud = await connectError(rsa.url, {
      token: await rsToken({}, (j) => j.setAudience('another-app')),
    });
    expect(aud.data?.code).toBe('token_invalid');
    expect(aud.message).toContain('"aud"');
    const iss = await connectError(rsa.url, {
      token: await rsToken({}, (j) => j.setIssuer('https://evil.example')),
    });
    expect(iss.data?.code).toBe('token_invalid');
    expect(iss.message).toContain('"iss"');
    const ok = await connectClient(rsa.url, await rsToken({}));
    expect(ok.connected.user).toBe('alice');
    ok.close();
  });

  it('a token not valid yet (nbf in the future)', async () => {
    const err = await connectError(rsa.url, {
      token: await rsToken({}, (j) => j.setNotBefore(Math.floor(Date.now() / 1000) + 3600)),
    });
    expect(err.data?.code).toBe('token_invalid');
    expect(err.message).toContain('"nbf"');
  });

  it('a token without exp', async () => {
    const noExp = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256' })
      .setSubject('alice')
      .setAudience(AUDIENCE)
      .setIssuer(ISSUER)
      .sign(privateKey);
    const err = await connectError(rsa.url, { token: noExp });
    expect(err.data?.code).toBe('token_invalid');
    expect(err.message).toContain('"exp"');
  });

  it('an expired token', async () => {
    const err = await connectError(rsa.url, {
      token: await rsToken({}, (j) => j.setExpirationTime(Math.floor(Date.now() / 1000) - 60)),
    });
    expect(err.data?.code).toBe('token_expired');
  });

  it('a token for user A subscribing to B’s channel, or to one its patterns do not allow', async () => {
    const a = await connectClient(node.url, await token('alice', { channels: ['order:1'] }));
    expect(await a.request('subscribe', { channels: ['user:bob'] })).toEqual({
      ok: false,
      ...error('invalid_channel'),
    });
    expect(await a.request('subscribe', { channels: ['order:2'] })).toEqual({
      ok: false,
      error: { code: 'channel_not_allowed', message: 'the token does not allow channel "order:2"' },
    });
    a.close();
  });

  it('a replayed signed request', async () => {
    const body = JSON.stringify({ event: 'x', users: ['a'] });
    const timestamp = Math.floor(Date.now() / 1000);
    expect((await signedRequest(node.url, 'POST', '/v1/publish', body, { timestamp })).status).toBe(200);
    const replay = await signedRequest(node.url, 'POST', '/v1/publish', body, { timestamp });
    expect(replay.status).toBe(401);
    expect(replay.body).toEqual(error('replayed_request'));
  });

  it('a signed request whose body was tampered with', async () => {
    const signed = JSON.stringify({ event: 'x', users: ['a'] });
    const ts = String(Math.floor(Date.now() / 1000));
    const { sign } = await import('../../src/http/auth.js');
    const res = await fetch(`${node.url}/v1/publish`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-pushrelay-key': KEY.name,
        'x-pushrelay-timestamp': ts,
        'x-pushrelay-signature': sign(KEY.secret, ts, 'POST', '/v1/publish', signed),
      },
      body: JSON.stringify({ event: 'x', users: ['mallory'] }),
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({
      error: { code: 'invalid_signature', message: 'the request signature does not match' },
    });
  });

  it('a signed request from a clock six minutes off', async () => {
    const body = JSON.stringify({ event: 'x', users: ['a'] });
    for (const skew of [-360, 360]) {
      const res = await signedRequest(node.url, 'POST', '/v1/publish', body, {
        timestamp: Math.floor(Date.now() / 1000) + skew,
      });
      expect(res.status).toBe(401);
      expect(res.body).toEqual({
        error: { code: 'stale_signature', message: 'the signed request is outside the five-minute window' },
      });
    }
  });

  it('an Origin not on the allow-list, over polling and WebSocket', async () => {
    const handshake = (origin: string) =>
      fetch(`${node.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin } });
    const refused = await handshake('https://evil.example');
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({ code: 4, message: 'this Origin is not on the allow-list' });
    expect((await handshake('https://app.example')).status).toBe(200);
    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`${node.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`, {
        headers: { origin: 'https://evil.example' },
      });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => resolve(101));
      ws.on('error', () => {});
    });
    expect(status).toBe(400); // engine.io refuses every rejected upgrade with 400, before any WebSocket exists
    // A stock browser client on that origin gets a connect_error and no session.
    const client = io(node.url, {
      transports: ['polling'],
      extraHeaders: { origin: 'https://evil.example' },
      reconnection: false,
    });
    await new Promise((resolve) => client.once('connect_error', resolve));
    client.close();
  });
});

describe('hostile input across a cluster: shared limits', () => {
  let redis: RedisServer;
  let a: Node;
  let b: Node;
  beforeAll(async () => {
    redis = await startRedis();
    const env = { REDIS_URL: redis.url, PUSHRELAY_RATE_LIMIT: '10' };
    [a, b] = [await startInProcess(env), await startInProcess(env)];
  });
  afterEach(async () => {
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(PROTOTYPE_KEYS);
    for (const node of [a, b]) expect((await fetch(`${node.url}/healthz`)).status).toBe(200);
  });
  afterAll(async () => {
    await a.stop();
    await b.stop();
    await redis.stop();
  });

  it('the publisher rate limit exceeded on two nodes at once is one limit', async () => {
    await waitFor(async () => (await fetch(`${a.url}/readyz`)).ok && (await fetch(`${b.url}/readyz`)).ok);
    // 8 per node stays under 10 on each, so only a shared limit refuses any.
    const answers = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        post(`${(i % 2 ? a : b).url}/v1/publish`, { event: 'x', users: ['a'] }),
      ),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(6);
    const limited = answers.find((r) => r.status === 429)!;
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(limited.body).toEqual({
      error: {
        code: 'rate_limited',
        message: expect.stringMatching(/^more than 10 requests per minute with this key/),
      },
    });
  });

  it('forged X-Forwarded-For headers do not open new buckets', async () => {
    // The previous test spent this key's minute; every forged address is still refused.
    for (let i = 0; i < 5; i++) {
      const res = await post(
        `${a.url}/v1/publish`,
        { event: 'x', users: ['a'] },
        { headers: { 'x-forwarded-for': `203.0.113.${i}, 198.51.100.${i}` } },
      );
      expect(res.status).toBe(429);
    }
  });
});
