import { beforeAll, describe, expect, it } from 'vitest';
import { KEY } from '../helpers/env.js';
import { type Mode, nodePair } from '../helpers/nodes.js';

// POST /v1/publish and /v1/batch with JSON and a Bearer key are answered by a
// node:http fast path in front of Fastify; every other request (Basic auth
// here) goes through Fastify. Both must answer every body the same way:
// status, error body, and the rate-limit headers.

const basic = `Basic ${Buffer.from(`${KEY.name}:${KEY.secret}`).toString('base64')}`;
const bearer = `Bearer ${KEY.secret}`;

const BODIES: [string, string | Buffer][] = [
  [
    'a valid publish',
    JSON.stringify({ event: 'e', data: { a: 1 }, users: ['nobody'], channels: ['room:1'] }),
  ],
  ['not JSON', '{"event": '],
  ['an unknown field', JSON.stringify({ event: 'e', users: ['u'], colour: 'red' })],
  ['a missing event', JSON.stringify({ users: ['u'] })],
  ['no target', JSON.stringify({ event: 'e' })],
  ['a reserved event', JSON.stringify({ event: 'connect', users: ['u'] })],
  ['a bad user id', JSON.stringify({ event: 'e', users: ['a b'] })],
  ['a forbidden key', '{"event":"e","users":["u"],"data":{"__proto__":{"x":1}}}'],
  ['too deep', `{"event":"e","users":["u"],"data":${'['.repeat(200)}${']'.repeat(200)}}`],
  [
    'invalid UTF-8',
    Buffer.concat([Buffer.from('{"event":"'), Buffer.from([0xc3, 0x28]), Buffer.from('","users":["u"]}')]),
  ],
  ['a user channel', JSON.stringify({ event: 'e', channels: ['user:x'] })],
];

for (const mode of ['standalone', 'cluster'] as Mode[]) {
  describe(`the publish fast path answers as Fastify does (${mode})`, () => {
    const nodes = nodePair(mode, { PUSHRELAY_RATE_LIMIT: '100000' });
    let url: string;
    beforeAll(() => {
      url = nodes.a.url;
    });

    async function send(path: string, authorization: string, body: string | Buffer) {
      const res = await fetch(`${url}${path}`, {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/json' },
        body,
      });
      const text = await res.text();
      return {
        status: res.status,
        body: JSON.parse(text) as Record<string, unknown>,
        type: res.headers.get('content-type'),
        limit: res.headers.get('x-ratelimit-limit'),
        remaining: res.headers.get('x-ratelimit-remaining') !== null,
        reset: res.headers.get('x-ratelimit-reset') !== null,
      };
    }

    /** What must be equal: ids and positions differ between two publishes. */
    function comparable(a: Awaited<ReturnType<typeof send>>) {
      const body = { ...a.body };
      if (typeof body.id === 'string') body.id = 'id';
      if (body.channels) body.channels = Object.keys(body.channels as object);
      if (Array.isArray(body.results)) body.results = body.results.length;
      return { ...a, body };
    }

    for (const [what, body] of BODIES) {
      it(`/v1/publish with ${what}`, async () => {
        const fast = await send('/v1/publish', bearer, body);
        const slow = await send('/v1/publish', basic, body);
        expect(comparable(fast)).toEqual(comparable(slow));
        // Rate-limit headers come with answers that got as far as the limiter (a body that parses and matches the schema).
        if (what === 'a valid publish') expect(fast.limit).toBe('100000');
      });
    }

    it('/v1/batch: a valid batch, and one with a bad message', async () => {
      const good = JSON.stringify({
        messages: [
          { event: 'e', users: ['u1'] },
          { event: 'f', channels: ['c'] },
        ],
      });
      const fast = await send('/v1/batch', bearer, good);
      expect(fast.status).toBe(200);
      expect(fast.body.results).toEqual([
        expect.objectContaining({ ok: true, offline: ['u1'] }),
        expect.objectContaining({ ok: true, offline: [] }),
      ]);
      expect(comparable(fast)).toEqual(comparable(await send('/v1/batch', basic, good)));
      const bad = JSON.stringify({
        messages: [
          { event: 'e', users: ['u1'] },
          { event: 'disconnect', users: ['u'] },
        ],
      });
      expect(comparable(await send('/v1/batch', bearer, bad))).toEqual(
        comparable(await send('/v1/batch', basic, bad)),
      );
    });
  });
}

for (const mode of ['standalone', 'cluster'] as Mode[]) {
  describe(`the publish fast path counts the rate limit down (${mode})`, () => {
    // Standalone, the limiter answers from the quota this node holds without a
    // callback; in the cluster each request of a limit this small takes its slice from Redis.
    const nodes = nodePair(mode, { PUSHRELAY_RATE_LIMIT: '3' });

    it('answers remaining 2, 1, 0, then 429 with Retry-After, as the limit runs out', async () => {
      const seen: [number, string | null, string | null][] = [];
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${nodes.a.url}/v1/publish`, {
          method: 'POST',
          headers: { authorization: bearer, 'content-type': 'application/json' },
          body: JSON.stringify({ event: 'e', users: ['nobody'] }),
        });
        await res.text();
        seen.push([
          res.status,
          res.headers.get('x-ratelimit-remaining'),
          res.headers.get('x-ratelimit-limit'),
        ]);
        if (res.status === 429) expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      }
      expect(seen).toEqual([
        [200, '2', '3'],
        [200, '1', '3'],
        [200, '0', '3'],
        [429, '0', '3'],
        [429, '0', '3'],
      ]);
    });
  });
}
