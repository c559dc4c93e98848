import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { KEY, READ_KEY, token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { type Mode, nodePair } from '../helpers/nodes.js';
import { sleep } from '../helpers/wait.js';

// Idempotency ids belong to the publisher key that sent them: another key
// reusing an id neither suppresses its message nor receives its answer, and
// one key reusing an id for a different message is told so (409) instead of
// being silently answered with the first message's result.

const OTHER = { name: 'billing', secret: 'test-billing-secret-0123456789abcdef' } as const;

interface Answer {
  id: string;
  online: { users: number; sockets: number };
  offline: string[];
  channels: Record<string, { offset: number; epoch: string }>;
}

for (const mode of ['standalone', 'cluster'] as Mode[]) {
  describe(`idempotency ids are scoped per publisher key (${mode})`, () => {
    const nodes = nodePair(mode, {
      PUSHRELAY_KEYS: `${KEY.name}:${KEY.secret},${READ_KEY.name}:${READ_KEY.secret}:read,${OTHER.name}:${OTHER.secret}:publish`,
    });
    let alice: TestClient;
    let bob: TestClient;
    beforeAll(async () => {
      alice = await connectClient(nodes.a.url, await token('alice'));
      bob = await connectClient(nodes.b.url, await token('bob'));
    });
    afterAll(() => {
      alice?.close();
      bob?.close();
    });

    it('delivers and answers each key’s message when two keys use the same id', async () => {
      const first = await post<Answer>(`${nodes.a.url}/v1/publish`, {
        event: 'shipped',
        data: { from: 'app' },
        users: ['alice'],
        id: 'order-1',
      });
      expect(first.status).toBe(200);
      // Same id, another key, another user and data: its own message, its own answer.
      const second = await post<Answer>(
        `${nodes.b.url}/v1/publish`,
        { event: 'shipped', data: { from: 'billing' }, users: ['alice', 'carol'], id: 'order-1' },
        { secret: OTHER.secret },
      );
      expect(second.status).toBe(200);
      expect(second.body.offline).toEqual(['carol']);
      expect(second.body.channels['user:alice']!.offset).toBe(first.body.channels['user:alice']!.offset + 1);
      const got = await alice.waitForEvent('shipped', 2);
      expect(got.map((r) => r.data)).toEqual([{ from: 'app' }, { from: 'billing' }]);

      // Each key's repeat still answers its own first answer and delivers nothing.
      const again = await post<Answer>(
        `${nodes.a.url}/v1/publish`,
        { event: 'shipped', data: { from: 'billing' }, users: ['carol', 'alice'], id: 'order-1' },
        { secret: OTHER.secret },
      );
      expect(again.status).toBe(200);
      expect(again.body).toEqual(second.body);
      const againFirst = await post<Answer>(`${nodes.b.url}/v1/publish`, {
        event: 'shipped',
        data: { from: 'app' },
        users: ['alice'],
        id: 'order-1',
      });
      expect(againFirst.body).toEqual(first.body);
      await sleep(200);
      expect(alice.events('shipped')).toHaveLength(2);
    });

    it('refuses the same id with a different body from the same key with 409 idempotency_conflict', async () => {
      const body = { event: 'paid', data: { amount: 10 }, users: ['bob'], id: 'pay-7' };
      const first = await post<Answer>(`${nodes.a.url}/v1/publish`, body);
      expect(first.status).toBe(200);
      for (const changed of [
        { ...body, data: { amount: 11 } },
        { ...body, event: 'refunded' },
        { ...body, users: ['bob', 'alice'] },
        { event: 'paid', data: { amount: 10 }, channels: ['orders'], id: 'pay-7' },
      ]) {
        const res = await post(`${nodes.b.url}/v1/publish`, changed);
        expect(res.status).toBe(409);
        expect(res.body).toEqual({
          error: { code: 'idempotency_conflict', message: expect.stringContaining('"pay-7"') },
        });
      }
      // The same body again is the original answer.
      const repeat = await post<Answer>(`${nodes.b.url}/v1/publish`, body);
      expect(repeat.status).toBe(200);
      expect(repeat.body).toEqual(first.body);
      await sleep(200);
      expect(bob.events('paid').map((r) => r.data)).toEqual([{ amount: 10 }]);
    });

    it('refuses a batch carrying a conflicting id and writes none of it', async () => {
      const first = await post(`${nodes.a.url}/v1/batch`, {
        messages: [{ event: 'b1', data: 1, users: ['bob'], id: 'batch-1' }],
      });
      expect(first.status).toBe(200);
      const res = await post(`${nodes.b.url}/v1/batch`, {
        messages: [
          { event: 'b2', data: 2, users: ['bob'] },
          { event: 'b1', data: 'other', users: ['bob'], id: 'batch-1' },
        ],
      });
      expect(res.status).toBe(409);
      expect(res.body).toEqual({
        error: { code: 'idempotency_conflict', message: expect.stringMatching(/^messages\[1\]: /) },
      });
      // Another key may use the id in a batch of its own.
      const other = await post<{ results: Answer[] }>(
        `${nodes.b.url}/v1/batch`,
        { messages: [{ event: 'b1', data: 'billing', users: ['bob'], id: 'batch-1' }] },
        { secret: OTHER.secret },
      );
      expect(other.status).toBe(200);
      const got = await bob.waitForEvent('b1', 2);
      expect(got.map((r) => r.data)).toEqual([1, 'billing']);
      expect(bob.events('b2')).toHaveLength(0);
    });
  });
}
