import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { sleep, waitFor } from '../helpers/wait.js';

type Answer = { ok: boolean; error?: { code: string; message: string }; [k: string]: unknown };

describe('client requests', () => {
  let node: Awaited<ReturnType<typeof startInProcess>>;
  beforeAll(async () => {
    node = await startInProcess({
      PUSHRELAY_NAMESPACES: '{"chat":{"publish":true},"news":{"public":true}}',
      PUSHRELAY_MAX_CHANNELS: '3',
    });
  });
  afterAll(() => node.stop());

  it('subscribes to channels the token allows and refuses the others', async () => {
    const c = await connectClient(node.url, await token('alice', { channels: ['team:7:*', 'order:42'] }));
    const ok = await c.request<Answer>('subscribe', { channels: ['team:7:general', 'order:42', 'news'] });
    expect(ok.ok).toBe(true);
    expect(ok.channels).toMatchObject({
      'order:42': { offset: 0, epoch: expect.any(String), recovered: false },
    });
    const refused = await c.request<Answer>('subscribe', { channels: ['order:43'] });
    expect(refused).toEqual({
      ok: false,
      error: { code: 'channel_not_allowed', message: 'the token does not allow channel "order:43"' },
    });
    await post(`${node.url}/v1/publish`, { event: 'tick', channels: ['team:7:general', 'order:43'] });
    await c.waitForEvent('tick');
    await sleep(100);
    expect(c.events('tick').map((e) => e.meta!.channel)).toEqual(['team:7:general']);
    c.close();
  });

  it('never lets a client into another user’s channel, whatever name it claims', async () => {
    const alice = await connectClient(node.url, await token('alice'));
    const mallory = await connectClient(node.url, await token('mallory', { channels: ['*'] }));
    const asked = await mallory.request<Answer>('subscribe', { channels: ['user:alice'] });
    expect(asked.ok).toBe(false);
    expect(asked.error!.code).toBe('invalid_channel');
    // Claiming a name in the handshake changes nothing: identity comes from the token.
    const claimer = await connectClient(node.url, await token('mallory'));
    claimer.socket.emit('username', 'alice');
    await post(`${node.url}/v1/publish`, { event: 'secret', data: 's3cret', users: ['alice'] });
    await alice.waitForEvent('secret');
    await sleep(150);
    expect(mallory.events('secret')).toHaveLength(0);
    expect(claimer.events('secret')).toHaveLength(0);
    for (const c of [alice, mallory, claimer]) c.close();
  });

  it('stops delivering after unsubscribe', async () => {
    const c = await connectClient(node.url, await token('alice', { channels: ['order:*'] }));
    await c.request('subscribe', { channels: ['order:1'] });
    await post(`${node.url}/v1/publish`, { event: 'u', channels: ['order:1'] });
    await c.waitForEvent('u');
    expect(await c.request<Answer>('unsubscribe', { channels: ['order:1'] })).toEqual({ ok: true });
    await post(`${node.url}/v1/publish`, { event: 'u', channels: ['order:1'] });
    await sleep(150);
    expect(c.events('u')).toHaveLength(1);
    c.close();
  });

  it('limits the channels of one socket, counting requests in flight', async () => {
    const c = await connectClient(node.url, await token('alice', { channels: ['x:*'] }));
    const answers = await Promise.all([
      c.request<Answer>('subscribe', { channels: ['x:1', 'x:2'] }),
      c.request<Answer>('subscribe', { channels: ['x:3', 'x:4'] }),
    ]);
    expect(answers.map((a) => a.ok).sort()).toEqual([false, true]);
    expect(answers.find((a) => !a.ok)!.error!.code).toBe('too_many_channels');
    c.close();
  });

  it('answers malformed requests with bad_request and keeps the socket', async () => {
    const c = await connectClient(node.url, await token('alice'));
    for (const payload of [
      undefined,
      null,
      'news',
      { channels: 'news' },
      { channels: [] },
      { channels: [1] },
    ]) {
      const a = await c.request<Answer>('subscribe', payload);
      expect(a.ok).toBe(false);
      expect(['bad_request', 'invalid_channel']).toContain(a.error!.code);
    }
    const since = await c.request<Answer>('subscribe', {
      channels: ['news'],
      since: { news: { offset: -1 } },
    });
    expect(since.error!.code).toBe('bad_request');
    expect(c.socket.connected).toBe(true);
    c.close();
  });

  it('lets clients publish where the namespace allows it, with the same validation as HTTP', async () => {
    const a = await connectClient(node.url, await token('alice', { channels: ['chat:*', 'order:*'] }));
    const b = await connectClient(node.url, await token('bob', { channels: ['chat:*'] }));
    await a.request('subscribe', { channels: ['chat:lobby'] });
    await b.request('subscribe', { channels: ['chat:lobby'] });
    const sent = await a.request<Answer>('publish', {
      channel: 'chat:lobby',
      event: 'say',
      data: { text: 'hi' },
    });
    expect(sent).toMatchObject({ ok: true, id: expect.any(String), offset: 1 });
    expect((await b.waitForEvent('say'))[0]!.data).toEqual({ text: 'hi' });
    const notAllowed = await a.request<Answer>('publish', { channel: 'order:1', event: 'say' });
    expect(notAllowed.error!.code).toBe('publish_not_allowed');
    const reserved = await a.request<Answer>('publish', { channel: 'chat:lobby', event: 'disconnect' });
    expect(reserved.error!.code).toBe('reserved_event');
    const deep = await a.request<Answer>('publish', {
      channel: 'chat:lobby',
      event: 'say',
      data: JSON.parse(`${'['.repeat(50)}${']'.repeat(50)}`),
    });
    expect(deep.error!.code).toBe('too_deep');
    a.close();
    b.close();
  });

  it('ends a socket whose token expires, and keeps one that refreshed in time', async () => {
    const ends = await connectClient(node.url, await token('eve', { ttlSeconds: 2 }));
    const stays = await connectClient(node.url, await token('eve', { ttlSeconds: 2 }));
    const refreshed = await stays.request<Answer>('refresh', {
      token: await token('eve', { ttlSeconds: 60 }),
    });
    expect(refreshed).toMatchObject({ ok: true, expiresAt: expect.any(Number) });
    const other = await stays.request<Answer>('refresh', { token: await token('mallory') });
    expect(other.error!.code).toBe('token_invalid');
    const [notice] = await ends.waitForEvent('pushrelay:disconnect', 1, 6000);
    expect(notice!.data).toMatchObject({ code: 4001, reason: 'token_expired', reconnect: false });
    await waitFor(() => ends.socket.disconnected);
    await sleep(500);
    expect(stays.socket.connected).toBe(true);
    ends.close();
    stays.close();
  });

  it('drops channels a refreshed token no longer allows', async () => {
    const c = await connectClient(node.url, await token('alice', { channels: ['order:*'] }));
    await c.request('subscribe', { channels: ['order:5'] });
    await c.request('refresh', { token: await token('alice', { channels: ['order:6'] }) });
    await post(`${node.url}/v1/publish`, { event: 'gone', channels: ['order:5'] });
    await sleep(150);
    expect(c.events('gone')).toHaveLength(0);
    c.close();
  });
});
