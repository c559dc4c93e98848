import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keySlot } from '../../src/redis/slots.js';
import { connectClient } from '../helpers/clients.js';
import { type RedisClusterSetup, startRedisCluster } from '../helpers/cluster.js';
import { READ_KEY, token } from '../helpers/env.js';
import { get, post } from '../helpers/http.js';
import { type RelayNode, startInProcess, startProcess } from '../helpers/nodes.js';
import { freePort } from '../helpers/ports.js';
import { allReceived, publishStream } from '../helpers/stream.js';
import { RecoveringSubscriber } from '../helpers/subscriber.js';
import { sleep, waitFor } from '../helpers/wait.js';

// Redis Cluster: three masters, each a real redis-server process, and two
// relay processes with REDIS_URL=redis+cluster://... Channels are picked so
// that each master owns some; every publish's history and fan-out must land
// on its channel's shard, and every id answered 2xx must reach every
// subscriber exactly once, in order.

const PREFIX = 'pushrelay';

describe('Redis Cluster of three masters', () => {
  let cluster: RedisClusterSetup;
  let nodes: RelayNode[];
  /** Two channels per master: sets[0] has one on each master, and so has sets[1]. */
  const sets: [string[], string[]] = [[], []];
  const channels: string[] = [];
  beforeAll(async () => {
    cluster = await startRedisCluster();
    const perMaster = new Map<number, string[]>();
    for (let i = 0; channels.length < 6; i++) {
      const channel = `shard:${i}`;
      const port = cluster.masterOf(keySlot(`${PREFIX}:{${channel}}:m`)).port;
      const mine = perMaster.get(port) ?? [];
      if (mine.length < 2) {
        sets[mine.length]!.push(channel);
        mine.push(channel);
        perMaster.set(port, mine);
        channels.push(channel);
      }
    }
    const env = {
      REDIS_URL: cluster.url,
      PUSHRELAY_RATE_LIMIT: '0',
      PUSHRELAY_NAMESPACES: '{"shard":{"history_size":5000}}',
    };
    nodes = await Promise.all([1, 2].map(() => startProcess(env)));
  });
  afterAll(async () => {
    await Promise.all((nodes ?? []).map((n) => n.stop()));
    await cluster?.stop();
  });

  it('hashes keys to slots the way Redis does', async () => {
    const c = cluster.masters[0]!.client();
    for (const key of ['a', 'pushrelay:{shard:1}:s', 'user:{x}y', '{}z', 'x{}{y}', 'ü:{é}']) {
      expect(keySlot(key), key).toBe(await c.call('CLUSTER', 'KEYSLOT', key));
    }
  });

  it('a publish stream over channels on all three masters: every 2xx id arrives once, in order', async () => {
    const urls = () => nodes.map((n) => n.url);
    // Half the subscribers are in one channel on each master, half in the other three.
    const subs = Array.from(
      { length: 8 },
      (_, i) => new RecoveringSubscriber(urls, `c${i}`, sets[i % 2]!, i),
    );
    await Promise.all(subs.map((s) => s.connect()));
    // Most publishes go to one channel; every fifth to one channel of each
    // set, on two different masters (one script call per slot).
    const targets = (i: number) =>
      i % 5 === 0 ? [sets[0][i % 3]!, sets[1][(i + 1) % 3]!] : [channels[i % 6]!];
    const pub = publishStream(urls, 1200, 4, 'cl', targets);
    await pub.done;
    const index = (id: string) => Number(id.slice(id.lastIndexOf('-') + 1));
    const expected = (s: RecoveringSubscriber) =>
      pub.acked.filter((id) => targets(index(id)).some((c) => sets[subs.indexOf(s) % 2]!.includes(c)));
    await allReceived(subs, expected);
    const counts = { lost: 0, duplicated: 0, outOfOrder: 0 };
    for (const s of subs) {
      const mine = expected(s);
      counts.lost += mine.filter((id) => !s.received.has(id)).length;
      for (const n of s.received.values()) if (n > 1) counts.duplicated += n - 1;
      counts.outOfOrder += s.outOfOrder;
      expect(s.received.size).toBe(mine.length); // nothing from the other set's channels
    }
    console.log('redis cluster stream:', {
      acknowledged: pub.acked.length,
      statuses: Object.fromEntries(pub.statuses),
      ...counts,
    });
    for (const s of subs) s.close();
    expect(counts).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
    expect(pub.statuses.get(200)).toBe(1200);

    // Each channel's history and delivery subscriptions are on its own master only.
    for (const channel of channels) {
      const owner = cluster.masterOf(keySlot(`${PREFIX}:{${channel}}:s`));
      const slot = keySlot(`${PREFIX}:{${channel}}:s`);
      expect(await owner.client().exists(`${PREFIX}:{${channel}}:s`)).toBe(1);
      for (const m of cluster.masters) {
        const keys = Number(await m.client().call('CLUSTER', 'COUNTKEYSINSLOT', slot));
        if (m === owner)
          expect(keys).toBeGreaterThanOrEqual(2); // stream and meta
        else expect(keys, `${channel} keys on ${m.port}`).toBe(0);
      }
    }
  });

  it('SSUBSCRIBEs a node to a channel only on its shard, and only while it has sockets in it', async () => {
    const [a, b] = nodes as [RelayNode, RelayNode];
    const channel = 'shard:solo';
    const deliver = `${PREFIX}:{${channel}}:d`;
    const owner = cluster.masterOf(keySlot(deliver));
    const shardSubscribers = async () => {
      let total = 0;
      for (const m of cluster.masters) {
        const [, n] = (await m.client().call('PUBSUB', 'SHARDNUMSUB', deliver)) as [string, number];
        if (m !== owner) expect(n, `subscribers on master ${m.port}`).toBe(0);
        total += n;
      }
      return total;
    };
    const reader = await connectClient(a.url, await token('reader', { channels: [channel] }));
    await reader.request('subscribe', { channels: [channel] });
    expect(await shardSubscribers()).toBe(1);
    const res = await post(`${b.url}/v1/publish`, { event: 'one', channels: [channel], data: 1 });
    expect(res.status).toBe(200);
    await reader.waitForEvent('one');
    reader.close();
    // A node stays subscribed a few seconds after its last socket left (reconnects are common).
    await waitFor(async () => (await shardSubscribers()) === 0, { timeoutMs: 10_000 });
  });

  it('takes raw PUBLISHes on the ingest channel at any master, and counts presence across slots', async () => {
    const [a, b] = nodes as [RelayNode, RelayNode];
    const alice = await connectClient(b.url, await token('alice'));
    const body = JSON.stringify({ event: 'raw', users: ['alice'], data: { ok: true } });
    for (const m of cluster.masters) {
      const before = alice.events('raw').length;
      await waitFor(
        async () => {
          await m.client().publish(`${PREFIX}:publish`, body);
          await sleep(200);
          return alice.events('raw').length > before;
        },
        { timeoutMs: 10_000 },
      );
    }
    const presence = await get(`${a.url}/v1/users/alice/presence`, { secret: READ_KEY.secret });
    expect(presence.body).toMatchObject({ online: true, sockets: 1 });
    const answer = await post(`${a.url}/v1/publish`, {
      event: 'many',
      users: ['alice', 'nobody'],
      channels: channels.slice(0, 3),
    });
    expect(answer.body).toMatchObject({ online: { users: 1, sockets: 1 }, offline: ['nobody'] });
    expect(Object.keys(answer.body.channels as object).sort()).toEqual(
      ['user:alice', 'user:nobody', ...channels.slice(0, 3)].sort(),
    );
    alice.close();
  });

  it('consumes the XADD ingest stream: every entry once, in order, partitions spread over the masters', async () => {
    const [a, b] = nodes as [RelayNode, RelayNode];
    const urls = () => [a.url, b.url];
    const subs = channels.map((c, i) => new RecoveringSubscriber(urls, `x${i}`, [c], i));
    await Promise.all(subs.map((s) => s.connect()));
    const producer = new Cluster(cluster.masters.map((m) => ({ host: '127.0.0.1', port: m.port })));
    try {
      const targets = (i: number) => (i % 10 === 0 ? channels.slice(0, 3) : [channels[i % 6]!]);
      for (let i = 0; i < 300; i++) {
        const body = { event: 'xadd', data: { i }, channels: targets(i) };
        await producer.xadd(`${PREFIX}:publish`, '*', 'body', JSON.stringify(body));
      }
      await producer.xadd(`${PREFIX}:publish`, '*', 'body', '{not json');
      const expected = (c: string) => [...Array(300).keys()].filter((i) => targets(i).includes(c));
      await waitFor(() => subs.every((s, k) => s.payloads.length >= expected(channels[k]!).length), {
        timeoutMs: 30_000,
        what: 'every entry delivered',
      });
      await sleep(300);
      subs.forEach((s, k) => {
        expect(
          s.payloads.map((d) => (d as { i: number }).i),
          channels[k],
        ).toEqual(expected(channels[k]!));
      });
      const dead = await waitFor(async () => {
        const d = await producer.xrange(`${PREFIX}:publish:dead`, '-', '+');
        return d.length > 0 ? d : undefined;
      });
      expect(dead[0]![1]).toEqual(expect.arrayContaining(['reason', 'invalid_json']));
      // Partition streams (each with its lease) live on their own slots, over several masters.
      const holders = new Set<number>();
      for (let k = 0; k < 16; k++) {
        const key = `${PREFIX}:{ingest:publish:${k}}`;
        const owner = cluster.masterOf(keySlot(key));
        if ((await owner.client().exists(key)) === 1) holders.add(owner.port);
      }
      expect(holders.size).toBeGreaterThanOrEqual(2);
    } finally {
      for (const s of subs) s.close();
      producer.disconnect();
    }
  });

  it('is unready and answers 503 when no seed node of REDIS_URL answers', async () => {
    const node = await startInProcess(
      { REDIS_URL: `redis+cluster://127.0.0.1:${await freePort()}` },
      { waitReady: false },
    );
    try {
      await sleep(500);
      expect((await fetch(`${node.url}/readyz`)).status).toBe(503);
      const res = await post(`${node.url}/v1/publish`, { event: 'e', users: ['u'] });
      expect(res.status).toBe(503);
    } finally {
      await node.stop();
    }
  });
});
