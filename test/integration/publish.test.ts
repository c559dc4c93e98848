import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { KEY, READ_KEY, token } from '../helpers/env.js';
import { get, post, signedRequest } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { sleep } from '../helpers/wait.js';

describe('HTTP publish API (standalone)', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  let alice: TestClient;
  let alice2: TestClient;
  let bob: TestClient;
  let carol: TestClient;
  beforeAll(async () => {
    node = await startInProcess();
    alice = await connectClient(node.url, await token('alice', { channels: ['order:*'] }));
    alice2 = await connectClient(node.url, await token('alice', { channels: ['order:*'] }), {
      transports: ['polling'],
    });
    bob = await connectClient(node.url, await token('bob', { channels: ['order:42'] }));
    carol = await connectClient(node.url, await token('carol'));
    await alice.request('subscribe', { channels: ['order:42'] });
    await bob.request('subscribe', { channels: ['order:42'] });
  });
  afterAll(async () => {
    for (const c of [alice, alice2, bob, carol]) c.close();
    await node.stop();
  });

  it('answers with the message id, who was online and the offset per channel', async () => {
    const res = await post(`${node.url}/v1/publish`, {
      event: 'bid',
      data: { amount: 120, order: 42 },
      users: ['alice', 'dave'],
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      online: { users: 1, sockets: 2 },
      offline: ['dave'],
      channels: { 'user:alice': { offset: expect.any(Number), epoch: expect.any(String) } },
    });
    const [a] = await alice.waitForEvent('bid');
    const [a2] = await alice2.waitForEvent('bid');
    expect(a!.data).toEqual({ amount: 120, order: 42 });
    expect(a2!.meta!.id).toBe(res.body.id);
    expect(a!.meta).toMatchObject({ id: res.body.id, channel: 'user:alice', epoch: expect.any(String) });
    expect(typeof a!.meta!.ts).toBe('number');
  });

  it('answers the position of channels named like Object.prototype properties', async () => {
    const body = { event: 'e', channels: ['__proto__', 'constructor', 'toString'] };
    const fast = await post(`${node.url}/v1/publish`, body);
    const basic = Buffer.from(`${KEY.name}:${KEY.secret}`).toString('base64');
    const slow = await post(`${node.url}/v1/publish`, body, {
      secret: '',
      headers: { authorization: `Basic ${basic}` },
    });
    for (const [res, offset] of [
      [fast, 1],
      [slow, 2],
    ] as const) {
      expect(res.status).toBe(200);
      const channels = res.body.channels as Record<string, { offset: number }>;
      expect(Object.keys(channels)).toEqual(['__proto__', 'constructor', 'toString']);
      for (const name of Object.keys(channels)) expect(channels[name]!.offset).toBe(offset);
    }
  });

  it('delivers to a channel’s subscribers except the users named in except_users', async () => {
    const res = await post(`${node.url}/v1/publish`, {
      event: 'price',
      data: 7,
      channels: ['order:42'],
      except_users: ['bob'],
    });
    expect(res.status).toBe(200);
    expect(res.body.online).toMatchObject({ sockets: 2 }); // alice and bob are subscribed; the count is before except
    await alice.waitForEvent('price');
    await sleep(100);
    expect(bob.events('price')).toHaveLength(0);
    expect(carol.events('price')).toHaveLength(0);
  });

  it('broadcasts to every socket', async () => {
    const res = await post(`${node.url}/v1/publish`, { event: 'news', data: 'hello', broadcast: true });
    expect(res.status).toBe(200);
    expect(res.body.online).toEqual({ users: 0, sockets: 4 });
    for (const c of [alice, alice2, bob, carol]) {
      const [got] = await c.waitForEvent('news');
      expect(got!.meta!.channel).toBe('$broadcast');
    }
  });

  it('accepts form-encoded publishes as Ruby post_form and PHP http_build_query send them', async () => {
    const ruby = 'event=form_ruby&data=%7B%22amount%22%3A5%7D&users=alice&users=carol';
    const r1 = await post(`${node.url}/v1/publish`, ruby, {
      contentType: 'application/x-www-form-urlencoded',
    });
    expect(r1.status, JSON.stringify(r1.body)).toBe(200);
    expect((await carol.waitForEvent('form_ruby'))[0]!.data).toEqual({ amount: 5 });
    const php = 'event=form_php&data=plain+text&users%5B0%5D=bob&broadcast=0';
    const r2 = await post(`${node.url}/v1/publish`, php, {
      contentType: 'application/x-www-form-urlencoded',
    });
    expect(r2.status, JSON.stringify(r2.body)).toBe(200);
    expect((await bob.waitForEvent('form_php'))[0]!.data).toBe('plain text');
  });

  it('publishes a batch, each message with its own result', async () => {
    const res = await post<{ results: { ok: boolean; id: string }[] }>(`${node.url}/v1/batch`, {
      messages: [
        { event: 'b1', users: ['alice'] },
        { event: 'b2', users: ['bob'], data: 2 },
        { event: 'b3', channels: ['order:42'] },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.body.results.map((r) => r.ok)).toEqual([true, true, true]);
    await alice.waitForEvent('b1');
    await bob.waitForEvent('b2');
    await bob.waitForEvent('b3');
  });

  it('delivers a publish repeated with the same id once, and answers the first result again', async () => {
    const body = { event: 'once', data: 1, users: ['carol'], id: 'order-42-paid' };
    const first = await post(`${node.url}/v1/publish`, body);
    const second = await post(`${node.url}/v1/publish`, body);
    expect(second.status).toBe(200);
    expect(second.body).toEqual(first.body);
    expect(first.body.id).toBe('order-42-paid');
    await carol.waitForEvent('once');
    await sleep(150);
    expect(carol.events('once')).toHaveLength(1);
  });

  it('accepts an HMAC-signed request, and refuses the identical request sent again', async () => {
    const body = JSON.stringify({ event: 'signed', users: ['carol'] });
    const timestamp = Math.floor(Date.now() / 1000);
    const first = await signedRequest(node.url, 'POST', '/v1/publish', body, { timestamp });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    await carol.waitForEvent('signed');
    const replay = await signedRequest(node.url, 'POST', '/v1/publish', body, { timestamp });
    expect(replay.status).toBe(401);
    expect(replay.body).toEqual({
      error: { code: 'replayed_request', message: 'this signed request was already used' },
    });
    await sleep(100);
    expect(carol.events('signed')).toHaveLength(1);
  });

  it('accepts identical signed requests in one second when each carries its own nonce, each nonce once', async () => {
    const path = '/v1/users/carol/presence';
    const timestamp = Math.floor(Date.now() / 1000);
    const [n1, n2] = ['nonce-aaaaaaaaaaaaaaaa-1', 'nonce-aaaaaaaaaaaaaaaa-2'];
    const both = await Promise.all([
      signedRequest(node.url, 'GET', path, '', { timestamp, nonce: n1 }),
      signedRequest(node.url, 'GET', path, '', { timestamp, nonce: n2 }),
    ]);
    expect(both.map((r) => r.status)).toEqual([200, 200]);
    const replay = await signedRequest(node.url, 'GET', path, '', { timestamp, nonce: n1 });
    expect(replay.status).toBe(401);
    expect(replay.body).toMatchObject({ error: { code: 'replayed_request' } });
    // The nonce is signed: a captured request does not pass under a nonce of the attacker's.
    const swapped = await signedRequest(node.url, 'GET', path, '', {
      timestamp,
      nonce: n1,
      sentNonce: 'nonce-bbbbbbbbbbbbbbbb-3',
    });
    expect(swapped.body).toMatchObject({ error: { code: 'invalid_signature' } });
    const short = await signedRequest(node.url, 'GET', path, '', { timestamp, nonce: 'abc' });
    expect(short.status).toBe(401);
    expect(short.body).toEqual({
      error: {
        code: 'unauthorized',
        message:
          'x-pushrelay-nonce must be 16-128 characters of A-Z a-z 0-9 _ - (a random value per request)',
      },
    });
  });

  it('answers user and channel presence', async () => {
    const u = await get(`${node.url}/v1/users/alice/presence`, { secret: READ_KEY.secret });
    expect(u).toMatchObject({ status: 200, body: { user: 'alice', online: true, sockets: 2 } });
    const off = await get(`${node.url}/v1/users/nobody/presence`, { secret: READ_KEY.secret });
    expect(off.body).toEqual({ user: 'nobody', online: false, sockets: 0 });
    const ch = await get(`${node.url}/v1/channels/order:42/presence`, { secret: READ_KEY.secret });
    expect(ch.body).toEqual({
      channel: 'order:42',
      sockets: 2,
      users: [
        { id: 'alice', sockets: 1 },
        { id: 'bob', sockets: 1 },
      ],
    });
  });

  it('serves a channel’s history after an offset', async () => {
    for (let i = 1; i <= 3; i++)
      await post(`${node.url}/v1/publish`, { event: 'h', data: i, channels: ['order:7'] });
    const res = await get<{
      messages: { data: number; offset: number }[];
      complete: boolean;
      offset: number;
    }>(`${node.url}/v1/channels/order:7/history?since=1&limit=10`, { secret: READ_KEY.secret });
    expect(res.status).toBe(200);
    expect(res.body.offset).toBe(3);
    expect(res.body.complete).toBe(true);
    expect(res.body.messages.map((m) => [m.offset, m.data])).toEqual([
      [2, 2],
      [3, 3],
    ]);
  });

  describe('legacy routes', () => {
    it('GET /?message= broadcasts notification { message }', async () => {
      const res = await get(`${node.url}/?message=test`);
      expect(res.status).toBe(200);
      const [got] = await carol.waitForEvent('notification');
      expect(got!.data).toEqual({ message: 'test' });
    });

    it('POST /message/:action/:to answers 404 for an offline user and 200 with delivery for an online one', async () => {
      const offline = await post(`${node.url}/message/alert/nobody`, { text: 'hi' });
      expect(offline.status).toBe(404);
      expect(offline.body).toEqual({
        error: { code: 'user_offline', message: 'user "nobody" has no socket connected anywhere' },
      });
      const online = await post(`${node.url}/message/alert/carol`, { text: 'hi' });
      expect(online.status).toBe(200);
      expect((await carol.waitForEvent('alert'))[0]!.data).toEqual({ text: 'hi' });
    });

    it('POST / with destination and data emits push { data }', async () => {
      const res = await post(`${node.url}/`, 'destination=bob&data=hello', {
        contentType: 'application/x-www-form-urlencoded',
      });
      expect(res.status).toBe(200);
      expect((await bob.waitForEvent('push'))[0]!.data).toEqual({ data: 'hello' });
    });
  });
});
