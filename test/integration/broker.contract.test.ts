import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Broker, createBroker } from '../../src/broker/index.js';
import { RelayError } from '../../src/errors.js';
import { type Delivery, type Publication, UNBORN_EPOCH } from '../../src/ingest/message.js';
import { createRedis, isReady } from '../../src/redis/client.js';
import { redisNames } from '../../src/redis/keys.js';
import { type RedisClusterSetup, startRedisCluster } from '../helpers/cluster.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// One contract, every broker driver: what the hub and recovery rely on.

const log = pino({ level: 'silent' });
const retention = (channel: string) => ({ size: channel.startsWith('small') ? 3 : 100, ttl: 60 });
let seq = 0;
const pub = (event = 'e', data: unknown = { n: ++seq }): Publication => ({
  id: `m${++seq}`,
  event,
  data: JSON.stringify(data),
  ts: Date.now(),
});

/** What ownDeliveries sees when each of its three publishes is offered before it is answered. */
const OFFERED_BEFORE_ANSWERED = [1, 2, 3].flatMap((n) => [`offered mine ${n}`, `answered ${n}`]);

/**
 * Publishes three times to a subscribed channel (and one it does not
 * subscribe) as an HTTP publish does, then once with an idempotency id, with
 * a handler that takes an own publish as the hub does (only the next offset).
 * Answers what happened, in order: each publish offered before it is
 * answered, and which offsets the copies through Redis delivered.
 */
async function ownDeliveries(broker: Broker, hooks: { subscribed?(): void; answered?(): void } = {}) {
  const events: string[] = [];
  const copies: number[] = [];
  const taken: number[] = [];
  let delivered = 0;
  broker.onOwnDelivery!((d) => {
    events.push(`offered ${d.channel} ${d.offset}`);
    if (d.offset !== delivered + 1) return false;
    delivered = d.offset;
    taken.push(d.offset);
    return true;
  });
  broker.onDelivery((d) => {
    copies.push(d.offset);
    delivered = Math.max(delivered, d.offset);
  });
  await broker.subscribe('mine');
  hooks.subscribed?.();
  for (let i = 1; i <= 3; i++) {
    const positions = await broker.publish(pub('tick', { i }), ['mine', 'elsewhere'], false);
    events.push(`answered ${positions[0]!.offset}`);
  }
  // A repeated idempotent id answers its first position: never offered, its copy delivers it.
  const again = pub('again', { i: 4 });
  await broker.publish(again, ['mine'], true);
  await broker.publish(again, ['mine'], true);
  hooks.answered?.();
  await waitFor(() => taken.length + copies.length >= 4);
  await sleep(100);
  return { events, copies, taken };
}

interface Harness {
  make(): Promise<Broker>;
  teardown(): Promise<void>;
}

function contract(name: string, harness: () => Harness) {
  describe(`${name} broker`, () => {
    let h: Harness;
    let broker: Broker;
    let deliveries: Delivery[];
    beforeAll(() => {
      h = harness();
    });
    beforeEach(async () => {
      broker = await h.make();
      deliveries = [];
      broker.onDelivery((d) => deliveries.push(d));
    });
    afterAll(() => h.teardown());

    it('gives each channel increasing offsets under one stable epoch', async () => {
      const a = await broker.publish(pub(), ['a', 'b'], false);
      const b = await broker.publish(pub(), ['a'], false);
      expect(a.map((p) => p.offset)).toEqual([1, 1]);
      expect(b[0]!.offset).toBe(2);
      expect(b[0]!.epoch).toBe(a[0]!.epoch);
      const [pos] = await broker.positions(['a']);
      expect(pos).toMatchObject({ offset: 2, epoch: a[0]!.epoch });
    });

    it('delivers only subscribed channels, in offset order, with the message decoded', async () => {
      await broker.subscribe('s');
      for (let i = 0; i < 20; i++) await broker.publish(pub('tick', { i }), ['s', 'not-subscribed'], false);
      await waitFor(() => deliveries.length >= 20);
      await sleep(50);
      expect(deliveries.map((d) => d.channel)).toEqual(Array(20).fill('s'));
      expect(deliveries.map((d) => d.offset)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(deliveries[3]!.message).toMatchObject({ event: 'tick', data: { i: 3 } });
      await broker.unsubscribe('s');
      await broker.publish(pub(), ['s'], false);
      await sleep(100);
      expect(deliveries).toHaveLength(20);
    });

    it('subscribes and unsubscribes hundreds of channels at once, in the order asked', async () => {
      const many = Array.from({ length: 300 }, (_, i) => `burst:${i}`);
      await Promise.all(many.map((c) => broker.subscribe(c)));
      // Half leave; one of them comes back in the same turn, after its leave: it must stay subscribed.
      const leaving = many.filter((_, i) => i % 2 === 1);
      await Promise.all([...leaving.map((c) => broker.unsubscribe(c)), broker.subscribe('burst:1')]);
      const staying = [...many.filter((_, i) => i % 2 === 0), 'burst:1'];
      for (const c of many) await broker.publish(pub('b', { c }), [c], false);
      await waitFor(() => deliveries.length >= staying.length);
      await sleep(100);
      expect(deliveries.map((d) => d.channel).sort()).toEqual([...staying].sort());
    });

    it('keeps concurrent publishes to one channel in offset order for subscribers', async () => {
      await broker.subscribe('busy');
      await Promise.all(Array.from({ length: 50 }, () => broker.publish(pub(), ['busy'], false)));
      await waitFor(() => deliveries.length >= 50);
      expect(deliveries.map((d) => d.offset)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    });

    it('reads history after an offset, and says whether it reaches back that far', async () => {
      for (let i = 1; i <= 5; i++) await broker.publish(pub('h', { i }), ['small:h'], false);
      const all = await broker.history('small:h', 2, 10);
      expect(all.entries.map((e) => e.offset)).toEqual([3, 4, 5]);
      expect(all.complete).toBe(true);
      const trimmed = await broker.history('small:h', 0, 10);
      expect(trimmed.complete).toBe(false); // only 3 kept: 1 and 2 are gone
      expect(trimmed.offset).toBe(5);
      const upToDate = await broker.history('small:h', 5, 10);
      expect(upToDate).toMatchObject({ complete: true, entries: [] });
      const ahead = await broker.history('small:h', 9, 10);
      expect(ahead.complete).toBe(false);
    });

    it('appends an idempotent publication to a channel once and answers its first position', async () => {
      const p = pub();
      const first = await broker.publish(p, ['idem:a', 'idem:b'], true);
      const again = await broker.publish({ ...p, ts: Date.now() }, ['idem:a', 'idem:b', 'idem:c'], true);
      expect(again.slice(0, 2)).toEqual(first);
      expect(again[2]!.offset).toBe(1);
      const [pos] = await broker.positions(['idem:a']);
      expect(pos!.offset).toBe(1);
    });

    it('publishes a batch in order, each publication to its channels, an id repeated within it once', async () => {
      await broker.subscribe('batch:a');
      await broker.subscribe('batch:b');
      const first = pub('one');
      const again = { ...first, ts: Date.now() };
      const positions = await broker.publishMany([
        { publication: first, channels: ['batch:a', 'batch:b'], idempotent: true },
        { publication: pub('two'), channels: ['batch:a'], idempotent: false },
        { publication: again, channels: ['batch:a'], idempotent: true },
        { publication: pub('none'), channels: [], idempotent: false },
      ]);
      expect(positions.map((p) => p.map((x) => x.offset))).toEqual([[1, 1], [2], [1], []]);
      await waitFor(() => deliveries.length >= 3);
      await sleep(50);
      // Order is per channel (shards deliver independently of each other).
      const of = (c: string) =>
        deliveries.filter((d) => d.channel === c).map((d) => [d.offset, d.message.event]);
      expect(of('batch:a')).toEqual([
        [1, 'one'],
        [2, 'two'],
      ]);
      expect(of('batch:b')).toEqual([[1, 'one']]);
    });

    it('tells which message id history holds at a position', async () => {
      const a = pub();
      const b = pub();
      await broker.publish(a, ['ids'], false);
      await broker.publish(b, ['ids'], false);
      expect(
        await broker.idsAt([
          { channel: 'ids', offset: 1 },
          { channel: 'ids', offset: 2 },
          { channel: 'ids', offset: 3 },
          { channel: 'ids', offset: 0 },
        ]),
      ).toEqual([a.id, b.id, undefined, undefined]);
    });

    it('renews an epoch only if it is still the expected one', async () => {
      const [first] = await broker.publish(pub(), ['renew'], false);
      const renewed = await broker.renewEpoch('renew', first!.epoch);
      expect(renewed).not.toBe(first!.epoch);
      expect(await broker.renewEpoch('renew', first!.epoch)).toBe(renewed); // someone else renewed it already
      const [next] = await broker.publish(pub(), ['renew'], false);
      expect(next).toEqual({ offset: 2, epoch: renewed });
    });

    it('creates nothing for a channel read before any publish: the unborn epoch, then a real one', async () => {
      const started = Date.now();
      expect(await broker.positions(['fresh'])).toEqual([{ offset: 0, epoch: UNBORN_EPOCH, lastTs: 0 }]);
      expect(await broker.history('fresh', 0, 10)).toEqual({
        epoch: UNBORN_EPOCH,
        offset: 0,
        entries: [],
        complete: true,
      });
      expect(await broker.positions(['fresh'])).toEqual([{ offset: 0, epoch: UNBORN_EPOCH, lastTs: 0 }]);
      const [after] = await broker.publish(pub(), ['fresh'], false);
      expect(after!.offset).toBe(1);
      expect(after!.epoch).not.toBe(UNBORN_EPOCH);
      const [top] = await broker.positions(['fresh']);
      expect(top).toMatchObject({ offset: 1, epoch: after!.epoch });
      expect(top!.lastTs).toBeGreaterThanOrEqual(started - 1000);
    });
  });
}

contract('memory', () => {
  const made: Broker[] = [];
  return {
    async make() {
      const b = createBroker({ kind: 'memory', retention, idempotencyMs: 60_000 });
      made.push(b);
      return b;
    },
    async teardown() {
      await Promise.all(made.map((b) => b.close()));
    },
  };
});

/** A Redis broker per test, on its own connections and with its own key prefix (instead of FLUSHALL). */
function redisHarness(target: () => Parameters<typeof createRedis>[0], prefix: string): Harness {
  const clients: ReturnType<typeof createRedis>[] = [];
  let n = 0;
  return {
    async make() {
      const command = createRedis(target(), 'command', log);
      const subscriber = createRedis(target(), 'subscriber', log);
      clients.push(command, subscriber);
      await waitFor(() => isReady(command) && isReady(subscriber));
      return createBroker({
        kind: 'redis',
        retention,
        idempotencyMs: 60_000,
        command,
        subscriber,
        names: redisNames(`${prefix}${++n}`),
        log,
      });
    },
    async teardown() {
      for (const c of clients) c.disconnect();
    },
  };
}

describe('redis broker', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis.stop());

  contract('redis', () => redisHarness(() => new URL(redis.url), 't'));

  /** A broker on its own connections and key prefix, once both connections are up. */
  async function readyBroker(prefix: string, durability?: { replicas: number; timeoutMs: number }) {
    const url = new URL(redis.url);
    const command = createRedis(url, 'command', log);
    const subscriber = createRedis(url, 'subscriber', log);
    await waitFor(() => command.status === 'ready' && subscriber.status === 'ready');
    const broker = createBroker({
      kind: 'redis',
      retention,
      idempotencyMs: 60_000,
      command,
      subscriber,
      names: redisNames(prefix),
      log,
      ...(durability ? { durability } : {}),
    });
    return { broker, command, subscriber };
  }

  it('with replicas to wait for and none in sync: answers 503 and fans nothing out', async () => {
    const { broker, command, subscriber } = await readyBroker('waiting', { replicas: 1, timeoutMs: 50 });
    const seen: Delivery[] = [];
    broker.onDelivery((d) => seen.push(d));
    await broker.subscribe('w');
    const p = pub();
    const err = await broker.publish(p, ['w'], true).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RelayError);
    expect((err as RelayError).code).toBe('unavailable');
    await sleep(100);
    expect(seen).toEqual([]); // no subscriber saw what no replica confirmed
    // It is in history, so a retry with the same id keeps its position rather than doubling it.
    expect((await broker.history('w', 0, 10)).entries.map((e) => e.offset)).toEqual([1]);
    const again = await broker.publish(p, ['w'], true).catch((e: unknown) => e);
    expect((again as RelayError).code).toBe('unavailable');
    expect((await broker.positions(['w']))[0]!.offset).toBe(1);
    command.disconnect();
    subscriber.disconnect();
  });

  it('offers its own publish to the hub before answering; drops the copy from Redis only when it was taken', async () => {
    const { broker, command, subscriber } = await readyBroker('own');
    const events: string[] = [];
    const offered: Delivery[] = [];
    const copies: number[] = [];
    let delivered = 0;
    let decline = false;
    // As the hub does: an own publish is taken only when it is the next offset.
    broker.onOwnDelivery!((d) => {
      offered.push(d);
      events.push(`offered ${d.channel} ${d.offset}`);
      if (decline || d.offset !== delivered + 1) return false;
      delivered = d.offset;
      return true;
    });
    broker.onDelivery((d) => {
      copies.push(d.offset);
      delivered = Math.max(delivered, d.offset);
    });
    await broker.subscribe('mine');
    // The copies through Redis are read only once every reply is in, whichever socket would win.
    const stream = (subscriber as unknown as { stream: NodeJS.ReadableStream }).stream;
    stream.pause();
    for (let i = 1; i <= 4; i++) {
      const { positions } = await broker.publishCounted!(pub('tick', { i }), ['mine', 'elsewhere'])!;
      events.push(`answered ${positions[0]!.offset}`);
    }
    // A repeated idempotent id answers its first position: not offered, its copy went out then.
    const item = { publication: pub('again', { i: 5 }), channels: ['mine'], idempotent: true };
    await broker.publishManyCounted!([item]);
    await broker.publishManyCounted!([item]);
    stream.resume();
    await waitFor(() => copies.length >= 1);
    // Declined: its copy delivers it.
    decline = true;
    await broker.publishCounted!(pub('tick', { i: 6 }), ['mine'])!;
    await waitFor(() => copies.length >= 2);
    await sleep(100);
    expect(events).toEqual([
      'offered mine 1',
      'answered 1',
      'offered mine 2',
      'answered 2',
      'offered mine 3',
      'answered 3',
      'offered mine 4',
      'answered 4',
      'offered mine 6',
    ]);
    expect(copies).toEqual([5, 6]);
    expect(offered[2]!.message).toMatchObject({ event: 'tick', data: { i: 3 } });
    expect(offered[2]!.epoch).toBe(offered[0]!.epoch);
    command.disconnect();
    subscriber.disconnect();
  });

  it('with a replica to wait for: offers its own publish once the replica holds it, before answering', async () => {
    const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(redis.port)] });
    try {
      const admin = redis.client();
      await waitFor(async () => /slave0:.*state=online/.test(await admin.info('replication')));
      const { broker, command, subscriber } = await readyBroker('own-wait', { replicas: 1, timeoutMs: 2000 });
      // The copies through Redis are read only once every reply is in.
      const stream = (subscriber as unknown as { stream: NodeJS.ReadableStream }).stream;
      const { events, copies, taken } = await ownDeliveries(broker, {
        subscribed: () => stream.pause(),
        answered: () => stream.resume(),
      });
      expect(events).toEqual(OFFERED_BEFORE_ANSWERED);
      expect(taken).toEqual([1, 2, 3]);
      // The taken ones' copies were dropped. (A repeated idempotent id is fanned out again after
      // WAIT, completing a fan-out a failure may have cut; the hub ignores an offset it has.)
      expect(new Set(copies)).toEqual(new Set([4]));
      command.disconnect();
      subscriber.disconnect();
    } finally {
      await replica.stop();
    }
  });

  it('sends the channels that come or go in one turn as one SUBSCRIBE and one UNSUBSCRIBE', async () => {
    // 500 channels lingering out at once used to be 500 writes, holding the event loop for tens of ms.
    const { broker, command, subscriber } = await readyBroker('burst');
    const admin = redis.client();
    const calls = async (name: string) => {
      const m = new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(await admin.info('commandstats'));
      return Number(m?.[1] ?? 0);
    };
    const channels = Array.from({ length: 500 }, (_, i) => `c${i}`);
    const [subscribes, unsubscribes] = [await calls('subscribe'), await calls('unsubscribe')];
    await Promise.all(channels.map((c) => broker.subscribe(c)));
    expect(await calls('subscribe')).toBe(subscribes + 1);
    const got: string[] = [];
    broker.onDelivery((d) => got.push(d.channel));
    await broker.publish(pub(), ['c0', 'c499'], false);
    await waitFor(() => got.length === 2);
    await Promise.all(channels.map((c) => broker.unsubscribe(c)));
    expect(await calls('unsubscribe')).toBe(unsubscribes + 1);
    await broker.publish(pub(), ['c0', 'c499'], false);
    await sleep(100);
    expect(got).toHaveLength(2);
    command.disconnect();
    subscriber.disconnect();
  });

  it('keeps a channel subscribed while its subscriber connection is still being set up', async () => {
    // A node subscribes as soon as its command connection is ready, which may
    // be before the subscriber connection is: that SUBSCRIBE must not be lost.
    const subscriber = createRedis(new URL(redis.url), 'subscriber', log);
    const got: string[] = [];
    subscriber.on('message', (_channel: string, text: string) => got.push(text));
    const subscribed = new Promise((resolve) => {
      subscriber.once('connect', () => resolve(subscriber.subscribe('early')));
    });
    await subscribed;
    const pubClient = redis.client();
    await waitFor(async () => {
      await pubClient.publish('early', 'hi');
      await sleep(50);
      return got.length > 0;
    });
    expect(subscriber.status).toBe('ready');
    subscriber.disconnect();
  });

  it('answers a typed 503 while Redis is down and works again after it returns', async () => {
    const url = new URL(redis.url);
    const command = createRedis(url, 'command', log);
    const subscriber = createRedis(url, 'subscriber', log);
    await waitFor(() => command.status === 'ready');
    const broker = createBroker({
      kind: 'redis',
      retention,
      idempotencyMs: 1000,
      command,
      subscriber,
      names: redisNames('down'),
      log,
    });
    await redis.kill();
    const err = await broker.publish(pub(), ['x'], false).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RelayError);
    expect((err as RelayError).code).toBe('unavailable');
    expect((err as RelayError).retryAfter).toBe(1);
    await redis.restart();
    await waitFor(() => command.status === 'ready', { timeoutMs: 15_000 });
    const [pos] = await broker.publish(pub(), ['x'], false);
    expect(pos!.offset).toBe(1);
    command.disconnect();
    subscriber.disconnect();
  });
});

// The same contract on a Redis Cluster of three masters: channels of one
// publish land on different slots ('a' and 'b' do), deliveries travel over
// sharded pub/sub.
describe('redis cluster broker', () => {
  let cluster: RedisClusterSetup;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(() => cluster.stop());

  contract('redis cluster', () => redisHarness(() => cluster.target, 'c'));

  it('offers its own publish to the hub from the script reply, on each slot, before answering', async () => {
    const harness = redisHarness(() => cluster.target, 'own');
    try {
      const broker = await harness.make();
      const { events, copies, taken } = await ownDeliveries(broker);
      expect(events).toEqual(OFFERED_BEFORE_ANSWERED);
      // Each offset exactly once, in order: from the reply, or from its copy when that came first.
      expect([...taken, ...copies].sort((a, b) => a - b)).toEqual([1, 2, 3, 4]);
      expect(copies).toContain(4);
    } finally {
      await harness.teardown();
    }
  });
});
