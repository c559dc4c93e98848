import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Publisher, PublisherError } from '../../src/publisher/index.js';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { KEY, READ_KEY, token } from '../helpers/env.js';
import { startInProcess } from '../helpers/nodes.js';
import { freePort } from '../helpers/ports.js';
import { startTcpBalancer } from '../helpers/tcp-balancer.js';
import { sleep } from '../helpers/wait.js';

// pushrelay/publisher against a real node, through a real balancer where the
// network has to misbehave.

type Node = Awaited<ReturnType<typeof startInProcess>>;

describe('pushrelay/publisher', () => {
  let node: Node;
  let alice: TestClient;
  beforeAll(async () => {
    node = await startInProcess();
    alice = await connectClient(node.url, await token('alice', { channels: ['order:*'] }));
    await alice.request('subscribe', { channels: ['order:42'] });
  });
  afterAll(async () => {
    alice.close();
    await node.stop();
  });

  it('publishes with Bearer credentials and gives every message an idempotency id', async () => {
    const p = new Publisher({ url: node.url, secret: KEY.secret });
    const res = await p.publish({ event: 'bid', data: { amount: 1 }, users: ['alice', 'zoe'] });
    expect(res.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.online).toEqual({ users: 1, sockets: 1 });
    expect(res.offline).toEqual(['zoe']);
    const [got] = await alice.waitForEvent('bid');
    expect(got!.data).toEqual({ amount: 1 });
    expect(got!.meta!.id).toBe(res.id);
  });

  it('signs requests when given the key name, so the secret never travels', async () => {
    const p = new Publisher({ url: node.url, secret: KEY.secret, keyName: KEY.name });
    const res = await p.publish({ event: 'signed', data: 1, channels: ['order:42'], id: 'order-42-signed' });
    expect(res.id).toBe('order-42-signed');
    await alice.waitForEvent('signed');
    // Presence, history and the node list are signed GETs.
    expect(await p.userPresence('alice')).toEqual({ user: 'alice', online: true, sockets: 1 });
    expect(await p.channelPresence('order:42')).toEqual({
      channel: 'order:42',
      sockets: 1,
      users: [{ id: 'alice', sockets: 1 }],
    });
    const history = await p.history('order:42', { since: 0, limit: 10 });
    expect(history.messages.map((m) => m.event)).toContain('signed');
    expect(history.complete).toBe(true);
    expect((await p.nodes()).nodes.map((n) => n.id)).toEqual([node.id]);
  });

  it('makes identical signed reads within one second, each accepted (a nonce per request)', async () => {
    const p = new Publisher({ url: node.url, secret: KEY.secret, keyName: KEY.name, retries: 0 });
    // Early in a second, so all of them share one timestamp (and, without nonces, one signature).
    while (Date.now() % 1000 > 300) await sleep(20);
    const reads = await Promise.all([
      p.userPresence('alice'),
      p.userPresence('alice'),
      p.channelPresence('order:42'),
      p.channelPresence('order:42'),
    ]);
    expect(reads[0]).toEqual(reads[1]);
    expect(reads[0]).toEqual({ user: 'alice', online: true, sockets: 1 });
    expect(reads[2]).toEqual(reads[3]);
    // And one after the other, as a page rendering twice would.
    expect(await p.userPresence('alice')).toEqual(await p.userPresence('alice'));
  });

  it('publishes a batch, answering in order', async () => {
    const p = new Publisher({ url: node.url, secret: KEY.secret });
    const results = await p.batch([
      { event: 'b1', users: ['alice'] },
      { event: 'b2', channels: ['order:42'], id: 'batch-b2' },
    ]);
    expect(results.map((r) => r.ok)).toEqual([true, true]);
    expect(results[1]!.id).toBe('batch-b2');
    await alice.waitForEvent('b1');
    await alice.waitForEvent('b2');
  });

  for (const signed of [false, true]) {
    it(`retries after a lost answer with the same id, and the message arrives once (${signed ? 'signed' : 'Bearer'})`, async () => {
      const lb = await startTcpBalancer([node.port]);
      try {
        lb.loseAnswers(1);
        const p = new Publisher({
          url: lb.url,
          secret: KEY.secret,
          ...(signed ? { keyName: KEY.name } : {}),
        });
        const event = `retried-${signed}`;
        const res = await p.publish({ event, data: 'once', users: ['alice'] });
        expect(lb.connections).toBe(2);
        await alice.waitForEvent(event);
        await sleep(200);
        expect(alice.events(event)).toHaveLength(1);
        expect(alice.events(event)[0]!.meta!.id).toBe(res.id);
      } finally {
        await lb.close();
      }
    });
  }

  it('surfaces the relay’s error codes as PublisherError, without retrying them', async () => {
    const lb = await startTcpBalancer([node.port]);
    try {
      const wrong = new Publisher({ url: lb.url, secret: 'not-the-secret' });
      const err = await wrong.publish({ event: 'x', users: ['alice'] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PublisherError);
      expect(err).toMatchObject({ code: 'invalid_key', status: 401, retryable: false });
      expect(lb.connections).toBe(1);
    } finally {
      await lb.close();
    }
    const p = new Publisher({ url: node.url, secret: KEY.secret });
    await expect(p.publish({ event: 'x' })).rejects.toMatchObject({ code: 'no_target', status: 400 });
    await expect(p.publish({ event: 'connect', users: ['a'] })).rejects.toMatchObject({
      code: 'reserved_event',
    });
    await expect(p.channelPresence('user:alice')).rejects.toMatchObject({ code: 'invalid_channel' });
    const reader = new Publisher({ url: node.url, secret: READ_KEY.secret });
    await expect(reader.publish({ event: 'x', users: ['a'] })).rejects.toMatchObject({
      code: 'forbidden',
      status: 403,
    });
  });

  it('does not sit out a long Retry-After: it throws rate_limited with the wait', async () => {
    const limited = await startInProcess({ PUSHRELAY_RATE_LIMIT: '1' });
    try {
      const p = new Publisher({ url: limited.url, secret: KEY.secret });
      await p.publish({ event: 'x', users: ['a'] });
      const err = (await p.publish({ event: 'x', users: ['a'] }).catch((e: unknown) => e)) as PublisherError;
      expect(err).toMatchObject({ code: 'rate_limited', status: 429, retryable: true });
      expect(err.retryAfter).toBeGreaterThan(10);
    } finally {
      await limited.stop();
    }
  });

  it('reports an unreachable relay as network_error after its retries', async () => {
    const port = await freePort();
    const p = new Publisher({ url: `http://127.0.0.1:${port}`, secret: KEY.secret, retries: 1 });
    const err = (await p.publish({ event: 'x', users: ['a'] }).catch((e: unknown) => e)) as PublisherError;
    expect(err).toBeInstanceOf(PublisherError);
    expect(err).toMatchObject({ code: 'network_error', status: 0, retryable: true });
    expect(err.message).toContain('ECONNREFUSED');
  });

  it('refuses bad options and bad input before sending anything', async () => {
    expect(() => new Publisher({ url: 'localhost:8080', secret: 's' })).toThrow('http or https');
    expect(() => new Publisher({ url: 'not a url', secret: 's' })).toThrow("relay's http(s) URL");
    // A URL with credentials is refused without echoing them (fetch's own error would print them).
    for (const url of ['http://app:Hunter2-pw@relay host:8080', 'https://app:Hunter2-pw@relay.example']) {
      expect(() => new Publisher({ url, secret: 's' })).toThrow(/^url must .*"https?:\/\/\*\*\*@relay/);
      expect(() => new Publisher({ url, secret: 's' })).not.toThrow(/Hunter2/);
    }
    expect(() => new Publisher({ url: node.url, secret: '' })).toThrow('secret');
    expect(() => new Publisher({ url: node.url, secret: 's', keyName: 'bad name' })).toThrow('keyName');
    expect(() => new Publisher({ url: node.url, secret: 's', retries: -1 })).toThrow('retries');
    const p = new Publisher({ url: node.url, secret: KEY.secret });
    await expect(p.publish(null as never)).rejects.toThrow(TypeError);
    await expect(p.publish({ data: 1 } as never)).rejects.toThrow('event');
    await expect(p.batch([])).rejects.toThrow('non-empty array');
    await expect(p.batch([{ event: 'ok', users: ['a'] }, 'x' as never])).rejects.toThrow('messages[1]');
    await expect(p.history('order:42', { since: -1 })).rejects.toThrow('since');
    await expect(p.userPresence('')).rejects.toThrow('user');
  });
});
