import { SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, connectError, type TestClient } from '../helpers/clients.js';
import { JWT_SECRET, KEY, READ_KEY, token } from '../helpers/env.js';
import { post, rawRequest } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';

// Every bad input gets the registry's answer, and the node stays healthy:
// after each case a real publish still reaches a connected client.

describe('bad input', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  let witness: TestClient;
  let n = 0;
  beforeAll(async () => {
    node = await startInProcess({ PUSHRELAY_MAX_PAYLOAD_BYTES: '4096' });
    witness = await connectClient(node.url, await token('witness'));
  });
  afterEach(async () => {
    const health = await fetch(`${node.url}/healthz`);
    expect(health.status).toBe(200);
    const event = `alive${++n}`;
    const res = await post(`${node.url}/v1/publish`, { event, users: ['witness'] });
    expect(res.status).toBe(200);
    await witness.waitForEvent(event);
  });
  afterAll(async () => {
    witness.close();
    await node.stop();
  });

  const publish = (body: unknown, opts?: Parameters<typeof post>[2]) =>
    post(`${node.url}/v1/publish`, body, opts);
  const expectError = (
    res: { status: number; body: unknown },
    status: number,
    code: string,
    message?: string,
  ) => {
    expect(res.status).toBe(status);
    expect(res.body).toMatchObject({ error: { code, ...(message ? { message } : {}) } });
    expect(Object.keys((res.body as { error: object }).error).sort()).toEqual(['code', 'message']);
  };

  it('malformed JSON', async () => {
    expectError(await publish('{"event": "x", users: [}'), 400, 'invalid_json');
  });

  it('an empty JSON body', async () => {
    expectError(await publish(''), 400, 'invalid_json', 'the body is empty');
  });

  it('a content type the relay does not read', async () => {
    expectError(await publish('event=x', { contentType: 'text/plain' }), 415, 'unsupported_media_type');
    expectError(await publish('<x/>', { contentType: 'application/xml' }), 415, 'unsupported_media_type');
  });

  it('JSON without a Content-Type, or labelled as a form (curl -d), is told so, not "missing the field event"', async () => {
    const json = JSON.stringify({ event: 'x', users: ['witness'] });
    const bare = await rawRequest(
      node.port,
      `POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY.secret}\r\nContent-Length: ${json.length}\r\nConnection: close\r\n\r\n`,
      json,
    );
    expectError(
      bare,
      415,
      'unsupported_media_type',
      'the request has no Content-Type header: send Content-Type: application/json (or application/x-www-form-urlencoded for a form)',
    );
    const curl = await publish(json, { contentType: 'application/x-www-form-urlencoded' });
    expectError(curl, 415, 'unsupported_media_type');
    expect((curl.body as { error: { message: string } }).error.message).toContain(
      'the body is JSON but its Content-Type is application/x-www-form-urlencoded',
    );
    expectError(
      await publish(json, { contentType: 'text/plain' }),
      415,
      'unsupported_media_type',
      'Content-Type text/plain is not supported: send Content-Type: application/json (or application/x-www-form-urlencoded for a form)',
    );
  });

  it('a publish without any target', async () => {
    expectError(await publish({ event: 'x', data: 1 }), 400, 'no_target');
    expectError(await publish({ event: 'x', users: [], channels: [] }), 400, 'no_target');
  });

  it('broadcast combined with other targets', async () => {
    expectError(await publish({ event: 'x', broadcast: true, users: ['a'] }), 400, 'invalid_target');
  });

  it('reserved event names', async () => {
    for (const event of ['connect', 'disconnect', 'connect_error', 'newListener', 'pushrelay:connected']) {
      expectError(await publish({ event, users: ['a'] }), 400, 'reserved_event');
    }
    expectError(await publish({ event: '', users: ['a'] }), 400, 'invalid_event');
    expectError(await publish({ event: 'a\nb', users: ['a'] }), 400, 'invalid_event');
  });

  it('bad channel names, and a user channel named directly', async () => {
    for (const channel of ['', 'a b', 'a::b', 'team:*', '{tag}', 'x'.repeat(201)]) {
      expectError(await publish({ event: 'x', channels: [channel] }), 400, 'invalid_channel');
    }
    const res = await publish({ event: 'x', channels: ['user:alice'] });
    expectError(res, 400, 'invalid_channel');
    expect((res.body as { error: { message: string } }).error.message).toContain('target users with "users"');
  });

  it('bad user ids', async () => {
    expectError(await publish({ event: 'x', users: ['has space'] }), 400, 'invalid_user');
    expectError(await publish({ event: 'x', channels: ['c'], except_users: [''] }), 400, 'invalid_user');
  });

  it('an oversized body', async () => {
    expectError(
      await publish({ event: 'x', users: ['a'], data: 'y'.repeat(5000) }),
      413,
      'payload_too_large',
    );
  });

  it('unknown fields, named in the answer', async () => {
    expectError(
      await publish({ event: 'x', users: ['a'], prioritty: 1 }),
      400,
      'invalid_body',
      'body has an unknown field "prioritty"',
    );
  });

  it('fields of the wrong type', async () => {
    expectError(
      await publish({ event: 'x', users: 'alice' }),
      400,
      'invalid_body',
      'body.users must be array',
    );
    expectError(await publish({ event: 'x', users: ['a'], broadcast: 'yes' }), 400, 'invalid_body');
    expectError(await publish([{ event: 'x' }]), 400, 'invalid_body');
    expectError(await publish({ users: ['a'] }), 400, 'invalid_body', 'body is missing the field "event"');
  });

  it('an idempotency id with characters it cannot have', async () => {
    expectError(await publish({ event: 'x', users: ['a'], id: 'has space' }), 400, 'invalid_body');
  });

  it('a missing, malformed or wrong publisher key, and a key without the scope', async () => {
    expectError(await publish({ event: 'x', users: ['a'] }, { secret: '' }), 401, 'unauthorized');
    expectError(
      await publish({ event: 'x', users: ['a'] }, { secret: '', headers: { authorization: 'Basic abc' } }),
      401,
      'unauthorized',
    );
    expectError(
      await publish({ event: 'x', users: ['a'] }, { secret: 'not-the-secret' }),
      401,
      'invalid_key',
    );
    expectError(await publish({ event: 'x', users: ['a'] }, { secret: READ_KEY.secret }), 403, 'forbidden');
  });

  it('a batch with one bad message writes nothing and names the message', async () => {
    const res = await post(`${node.url}/v1/batch`, {
      messages: [
        { event: 'batch_ok', users: ['witness'] },
        { event: 'disconnect', users: ['witness'] },
      ],
    });
    expectError(res, 400, 'reserved_event');
    expect((res.body as { error: { message: string } }).error.message).toMatch(/^messages\[1\]: /);
    await new Promise((r) => setTimeout(r, 100));
    expect(witness.events('batch_ok')).toHaveLength(0);
    expectError(await post(`${node.url}/v1/batch`, { messages: [] }), 400, 'invalid_body');
  });

  it('an unknown route', async () => {
    expectError(
      await post(`${node.url}/v2/publish`, { event: 'x' }),
      404,
      'not_found',
      'no route POST /v2/publish',
    );
  });

  describe('client tokens at connect', () => {
    it('no token', async () => {
      const err = await connectError(node.url, {});
      expect(err.data?.code).toBe('token_missing');
      expect(err.message).toContain('no token');
    });

    it('an expired token', async () => {
      const expired = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
        .sign(new TextEncoder().encode(JWT_SECRET));
      const err = await connectError(node.url, { token: expired });
      expect(err.data?.code).toBe('token_expired');
      expect(err.message).toBe('the token has expired');
    });

    it('an unsigned token (alg: none)', async () => {
      const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const unsigned = `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600 })}.`;
      const err = await connectError(node.url, { token: unsigned });
      expect(err.data?.code).toBe('token_invalid');
    });

    it('a token signed with another secret', async () => {
      const forged = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setExpirationTime('10m')
        .sign(new TextEncoder().encode('some-other-secret-entirely-0123456789'));
      const err = await connectError(node.url, { token: forged });
      expect(err.data?.code).toBe('token_invalid');
      expect(err.message).toContain('signature');
    });

    it('a token without exp, and one with a malformed sub or channels claim', async () => {
      const key = new TextEncoder().encode(JWT_SECRET);
      const noExp = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').sign(key);
      expect((await connectError(node.url, { token: noExp })).data?.code).toBe('token_invalid');
      const badSub = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('a b')
        .setExpirationTime('1h')
        .sign(key);
      expect((await connectError(node.url, { token: badSub })).message).toContain('"sub"');
      const badChannels = await new SignJWT({ channels: 'all' })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setExpirationTime('1h')
        .sign(key);
      expect((await connectError(node.url, { token: badChannels })).message).toContain('"channels"');
      expect((await connectError(node.url, { token: 'not.a.jwt' })).data?.code).toBe('token_invalid');
      expect((await connectError(node.url, { token: 42 })).data?.code).toBe('token_missing');
    });
  });
});
