import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { KEY, token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// Redis is trusted, but anything that reaches it (an operator's PUBLISH on a
// delivery channel, a stray XADD on a history stream) must not take a node
// down: a real node process, a real Redis, and messages written with a plain
// client. The node drops them, counts them, and keeps delivering.

const CHANNEL = 'pushrelay:{user:alice}:d';
const STREAM = 'pushrelay:{user:alice}:s';
const META = 'pushrelay:{user:alice}:m';

describe('messages on Redis that no socket can be sent', () => {
  let redis: RedisServer;
  let client: Redis;
  let node: Awaited<ReturnType<typeof startProcess>>;
  let alice: TestClient;

  beforeAll(async () => {
    redis = await startRedis();
    client = redis.client();
    node = await startProcess({ REDIS_URL: redis.url });
    alice = await connectClient(node.url, await token('alice'));
  });

  afterAll(async () => {
    alice?.close();
    await node?.stop();
    await redis?.stop();
  });

  async function publish(n: number): Promise<{ offset: number; epoch: string }> {
    const res = await post<{ channels: Record<string, { offset: number; epoch: string }> }>(
      `${node.url}/v1/publish`,
      { event: 'note', data: { n }, users: ['alice'] },
    );
    expect(res.status).toBe(200);
    return res.body.channels['user:alice']!;
  }

  it('drops reserved events, bad JSON and wrong shapes on a delivery channel, and keeps delivering', async () => {
    const first = await publish(1);
    await alice.waitForEvent('note', 1);
    const { epoch } = first;
    const next = first.offset + 1;
    const junk = [
      // The attack from the report: Socket.IO refuses to emit `connect`, which used to throw out of the subscriber.
      `${next}:${epoch}:{"i":"x1","e":"connect","t":1,"d":{}}`,
      `${next}:${epoch}:{"i":"x2","e":"disconnect","t":1,"d":{}}`,
      `${next}:${epoch}:{"i":"x3","e":"pushrelay:connected","t":1,"d":{}}`,
      `${next}:${epoch}:not json`,
      `${next}:${epoch}:[1,2]`,
      `${next}:${epoch}:null`,
      `${next}:${epoch}:{"i":7,"e":"note","t":1,"d":{}}`,
      `${next}:${epoch}:{"i":"x4","e":"note","t":"soon","d":{}}`,
      `${next}:${epoch}:{"i":"x5","e":"note","t":1,"x":[1],"d":{}}`,
      `${next}:${epoch}:{"i":"x6","e":"","t":1,"d":{}}`,
      'no position at all',
      `-3:${epoch}:{"i":"x7","e":"note","t":1,"d":{}}`,
      `abc:${epoch}:{"i":"x8","e":"note","t":1,"d":{}}`,
      `${next}::{"i":"x9","e":"note","t":1,"d":{}}`,
    ];
    for (const text of junk) expect(await client.publish(CHANNEL, text)).toBe(1);

    await waitFor(
      async () => (await scrape(node.url)).value('pushrelay_delivery_malformed_total') >= junk.length,
      { what: 'every malformed delivery counted' },
    );
    const metrics = await scrape(node.url);
    expect(metrics.value('pushrelay_delivery_malformed_total', { reason: 'reserved_event' })).toBe(3);
    expect(metrics.value('pushrelay_delivery_malformed_total', { reason: 'invalid_position' })).toBe(4);
    expect(metrics.value('pushrelay_delivery_malformed_total', { reason: 'invalid_json' })).toBe(1);

    // Still up, and the next real publish arrives with the next offset.
    const second = await publish(2);
    expect(second.offset).toBe(next);
    const notes = await alice.waitForEvent('note', 2);
    expect(notes.map((r) => r.data)).toEqual([{ n: 1 }, { n: 2 }]);
    expect(alice.received.some((r) => ['connect', 'disconnect'].includes(r.event))).toBe(false);
    expect(node.proc.exitCode).toBeNull();
  });

  it('skips a history entry that is not a publication while filling a gap, and delivers what follows', async () => {
    const before = await publish(3);
    await alice.waitForEvent('note', 3);
    // A history entry written by something else, taking the next offset: the
    // node learns of it only through the gap the next real publish reveals.
    const bad = before.offset + 1;
    await client.xadd(
      STREAM,
      `${bad}-0`,
      't',
      String(Date.now()),
      'p',
      '{"i":"y","e":"connect","t":1,"d":0}',
    );
    await client.hincrby(META, 's', 1);
    const dropped = (await scrape(node.url)).value('pushrelay_delivery_malformed_total');

    const after = await publish(4);
    expect(after.offset).toBe(bad + 1);
    const notes = await alice.waitForEvent('note', 4);
    expect(notes.map((r) => r.data)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]);
    expect(notes[3]!.meta?.offset).toBe(after.offset);
    expect((await scrape(node.url)).value('pushrelay_delivery_malformed_total')).toBe(dropped + 1);

    // The history route leaves the entry out instead of failing.
    const history = await fetch(`${node.url}/v1/channels/user:alice/history?since=0`, {
      headers: { authorization: `Bearer ${KEY.secret}` },
    });
    expect(history.status).toBe(200);
    const body = (await history.json()) as { messages: { offset: number }[] };
    expect(body.messages.map((m) => m.offset)).not.toContain(bad);
    expect(body.messages.map((m) => m.offset)).toContain(after.offset);

    await sleep(100);
    expect(node.proc.exitCode).toBeNull();
  });
});
