import { describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { nodePair } from '../helpers/nodes.js';
import { sleep } from '../helpers/wait.js';

type SubAnswer = {
  ok: boolean;
  channels: Record<string, { offset: number; epoch: string; recovered: boolean }>;
};

for (const mode of ['standalone', 'cluster'] as const) {
  describe(`recovery (${mode})`, () => {
    const nodes = nodePair(mode, {
      PUSHRELAY_NAMESPACES: '{"small":{"history_size":3},"busy":{"history_size":100000}}',
    });

    it('replays what a client missed, in order, before the subscribe answer, then continues live', async () => {
      const first = await connectClient(nodes.a.url, await token('alice', { channels: ['room:*'] }));
      await first.request<SubAnswer>('subscribe', { channels: ['room:1'] });
      await post(`${nodes.a.url}/v1/publish`, { event: 'm', data: 1, channels: ['room:1'] });
      const [m1] = await first.waitForEvent('m');
      first.close();
      for (let i = 2; i <= 5; i++)
        await post(`${nodes.a.url}/v1/publish`, { event: 'm', data: i, channels: ['room:1'] });
      const again = await connectClient(nodes.b.url, await token('alice', { channels: ['room:*'] }));
      const since = { 'room:1': { offset: m1!.meta!.offset, epoch: m1!.meta!.epoch } };
      const answer = await again.request<SubAnswer>('subscribe', { channels: ['room:1'], since });
      expect(answer.channels['room:1']).toEqual({
        offset: 5,
        epoch: m1!.meta!.epoch,
        recovered: true,
      });
      // Missed messages arrived before the answer.
      expect(again.events('m').map((e) => e.data)).toEqual([2, 3, 4, 5]);
      await post(`${nodes.a.url}/v1/publish`, { event: 'm', data: 6, channels: ['room:1'] });
      await again.waitForEvent('m', 5);
      await sleep(100);
      expect(again.events('m').map((e) => [e.data, e.meta!.offset])).toEqual([
        [2, 2],
        [3, 3],
        [4, 4],
        [5, 5],
        [6, 6],
      ]);
      again.close();
    });

    it('recovers the user’s own channel from auth.since at connect', async () => {
      const c = await connectClient(nodes.a.url, await token('bob'));
      const own = c.connected.channels['user:bob']!;
      c.close();
      await post(`${nodes.a.url}/v1/publish`, { event: 'dm', data: 'x', users: ['bob'] });
      await post(`${nodes.a.url}/v1/publish`, { event: 'dm', data: 'y', users: ['bob'] });
      const back = await connectClient(nodes.b.url, await token('bob'), {
        since: { 'user:bob': { offset: own.offset, epoch: own.epoch } },
      });
      expect(back.connected.channels['user:bob']).toMatchObject({ offset: own.offset + 2, recovered: true });
      expect(back.events('dm').map((e) => e.data)).toEqual(['x', 'y']);
      back.close();
    });

    it('says recovered: false when history no longer reaches back, and replays nothing', async () => {
      const c = await connectClient(nodes.a.url, await token('carol', { channels: ['small:*'] }));
      const { channels } = await c.request<SubAnswer>('subscribe', { channels: ['small:x'] });
      c.close();
      for (let i = 1; i <= 5; i++)
        await post(`${nodes.a.url}/v1/publish`, { event: 'm', data: i, channels: ['small:x'] });
      const back = await connectClient(nodes.b.url, await token('carol', { channels: ['small:*'] }));
      const answer = await back.request<SubAnswer>('subscribe', {
        channels: ['small:x'],
        since: { 'small:x': channels['small:x'] },
      });
      expect(answer.channels['small:x']).toMatchObject({ offset: 5, recovered: false });
      expect(back.events('m')).toEqual([]);
      back.close();
    });

    it('recovers on a channel that never stops receiving, without a gap or a duplicate at the seam', async () => {
      let c = await connectClient(nodes.a.url, await token('fay', { channels: ['busy:*'] }));
      await c.request('subscribe', { channels: ['busy:1'] });
      let publishing = true;
      const pump = (async () => {
        for (let i = 0; publishing; i++) {
          // Several in flight at once, so deliveries keep landing while a recovery reads history.
          await Promise.all(
            Array.from({ length: 48 }, (_, j) =>
              post(`${nodes.a.url}/v1/publish`, { event: 'b', data: i * 48 + j, channels: ['busy:1'] }),
            ),
          );
        }
      })();
      try {
        await c.waitForEvent('b', 20);
        for (let round = 0; round < 8; round++) {
          const last = c.events('b').at(-1)!.meta!;
          c.close();
          await sleep(30);
          const back = await connectClient(nodes.b.url, await token('fay', { channels: ['busy:*'] }));
          const answer = await back.request<SubAnswer>('subscribe', {
            channels: ['busy:1'],
            since: { 'busy:1': { offset: last.offset, epoch: last.epoch } },
          });
          expect(answer.channels['busy:1']!.recovered).toBe(true);
          await back.waitForEvent('b', 10);
          const offsets = back.events('b').map((e) => e.meta!.offset);
          expect(offsets).toEqual(offsets.map((_, i) => last.offset + 1 + i));
          c = back;
        }
      } finally {
        publishing = false;
        await pump;
        c.close();
      }
    });

    it('never answers a subscribe with a position older than a message the socket already got', async () => {
      const c = await connectClient(nodes.a.url, await token('gus', { channels: ['busy:*'] }));
      let publishing = true;
      const pump = (async () => {
        while (publishing) {
          await Promise.all(
            Array.from({ length: 16 }, () =>
              post(`${nodes.a.url}/v1/publish`, { event: 'b', channels: ['busy:2'] }),
            ),
          );
        }
      })();
      try {
        for (let round = 0; round < 5; round++) {
          await c.request('unsubscribe', { channels: ['busy:2'] });
          const before = c.received.length;
          // What had arrived when the answer did, counted in the acknowledgement
          // callback itself: messages decoded after it were sent after it.
          const [answer, upTo] = await new Promise<[SubAnswer, number]>((resolve) =>
            c.socket.emit('subscribe', { channels: ['busy:2'] }, (a: SubAnswer) =>
              resolve([a, c.received.length]),
            ),
          );
          const seen = c.received
            .slice(before, upTo)
            .filter((e) => e.event === 'b' && e.meta!.channel === 'busy:2');
          const highest = Math.max(0, ...seen.map((e) => e.meta!.offset));
          expect(answer.channels['busy:2']!.offset).toBeGreaterThanOrEqual(highest);
        }
      } finally {
        publishing = false;
        await pump;
        c.close();
      }
    });

    it('says recovered: false for a position from another epoch', async () => {
      const c = await connectClient(nodes.a.url, await token('dan', { channels: ['room:*'] }));
      const answer = await c.request<SubAnswer>('subscribe', {
        channels: ['room:9'],
        since: { 'room:9': { offset: 0, epoch: 'not-this-one' } },
      });
      expect(answer.channels['room:9']!.recovered).toBe(false);
      c.close();
    });

    it('skips replayed messages that excluded the recovering user', async () => {
      const c = await connectClient(nodes.a.url, await token('erin', { channels: ['room:*'] }));
      const { channels } = await c.request<SubAnswer>('subscribe', { channels: ['room:ex'] });
      c.close();
      await post(`${nodes.a.url}/v1/publish`, {
        event: 'm',
        data: 'not for erin',
        channels: ['room:ex'],
        except_users: ['erin'],
      });
      await post(`${nodes.a.url}/v1/publish`, { event: 'm', data: 'for all', channels: ['room:ex'] });
      const back = await connectClient(nodes.b.url, await token('erin', { channels: ['room:*'] }));
      const answer = await back.request<SubAnswer>('subscribe', { channels: ['room:ex'], since: channels });
      expect(answer.channels['room:ex']).toMatchObject({ offset: 2, recovered: true });
      expect(back.events('m').map((e) => e.data)).toEqual(['for all']);
      back.close();
    });
  });
}
