import { execFileSync } from 'node:child_process';
import type { Socket } from 'node:net';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseRedisUrl } from '../../src/config/schema.js';
import { createRedis } from '../../src/redis/client.js';
import { post } from '../helpers/http.js';
import { type ProcessNode, startInProcess, startProcess } from '../helpers/nodes.js';
import type { RedisServer } from '../helpers/redis.js';
import { MASTER_NAME, type SentinelSetup, startSentinels } from '../helpers/sentinel.js';
import { allReceived, publishStream } from '../helpers/stream.js';
import { RecoveringSubscriber, tally, xaddCounts } from '../helpers/subscriber.js';
import { sleep, waitFor } from '../helpers/wait.js';

// Redis Sentinel: a master, a replica and three sentinels, all real
// processes; two relay processes found the master through the sentinels. A
// failover happens in the middle of a steady publish stream, and every id
// answered 2xx must reach every subscriber exactly once, in order.
// PUSHRELAY_REDIS_WAIT_REPLICAS=1 is what makes that true: replication is
// asynchronous, and without WAIT a write the old master acknowledged may
// never have reached the replica that takes over.

const CHANNEL = 'failover:feed';

describe('Redis Sentinel', () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function cluster(): Promise<{
    setup: SentinelSetup;
    nodes: ProcessNode[];
    subs: RecoveringSubscriber[];
  }> {
    const setup = await startSentinels();
    cleanup.push(() => setup.stop());
    const env = {
      REDIS_URL: setup.url,
      PUSHRELAY_RATE_LIMIT: '0',
      PUSHRELAY_REDIS_WAIT_REPLICAS: '1',
      PUSHRELAY_REDIS_WAIT_MS: '500',
      PUSHRELAY_NAMESPACES: '{"failover":{"history_size":5000}}',
    };
    const nodes = await Promise.all([1, 2].map(() => startProcess(env)));
    cleanup.push(() => Promise.all(nodes.map((n) => n.stop())));
    const urls = () => nodes.map((n) => n.url);
    const subs = Array.from({ length: 12 }, (_, i) => new RecoveringSubscriber(urls, `s${i}`, [CHANNEL], i));
    await Promise.all(subs.map((s) => s.connect()));
    cleanup.push(() => {
      for (const s of subs) s.close();
    });
    return { setup, nodes, subs };
  }

  /**
   * When something was missed: each Redis server's role, and which of them each
   * node's connections are open to (from `ss`), with the node's readiness, so
   * a node left on the wrong server, or on none, shows.
   */
  async function whereNodesAre(nodes: ProcessNode[], servers: readonly RedisServer[]) {
    for (const r of servers) {
      const role = await r
        .client()
        .call('ROLE')
        .then(
          (v) => (v as unknown[])[0],
          (e: Error) => `unreachable (${e.message})`,
        );
      console.log(`redis :${r.port}`, role);
    }
    let sockets = '';
    try {
      sockets = execFileSync('ss', ['-tnpH', 'state', 'established'], { encoding: 'utf8' });
    } catch {}
    for (const n of nodes) {
      const pid = n.proc.pid;
      const ready = await fetch(`${n.url}/readyz`).then(
        async (r) => `${r.status} ${await r.text()}`,
        (e: Error) => e.message,
      );
      const peers = sockets
        .split('\n')
        .filter((l) => pid !== undefined && l.includes(`pid=${pid},`))
        .map((l) => l.trim().split(/\s+/)[3])
        .filter((peer) => servers.some((r) => peer?.endsWith(`:${r.port}`)));
      console.log(n.url, 'readyz', ready, 'connected to', peers.join(' ') || 'none');
    }
  }

  async function expectNothingLost(
    name: string,
    servers: readonly RedisServer[],
    nodes: ProcessNode[],
    subs: RecoveringSubscriber[],
    pub: ReturnType<typeof publishStream>,
  ) {
    await allReceived(subs, () => pub.acked);
    const counts = tally(subs, pub.acked);
    // Who missed what, and the nodes' last warnings, whenever something was missed.
    if (process.env.DEBUG_SCALE || counts.lost > 0 || counts.outOfOrder > 0) {
      for (const s of subs) {
        const missing = pub.acked.filter((id) => !s.received.has(id));
        console.log(
          s.user,
          s.reconnects,
          s.connected,
          missing.length,
          missing.slice(0, 3),
          missing.slice(-2),
        );
      }
      for (const n of nodes)
        console.log(
          n.output
            .filter((l) => !l.includes('"level":30') || /redis|sentinel/i.test(l))
            .slice(-25)
            .join('\n'),
        );
      await whereNodesAre(nodes, servers);
    }
    console.log(`sentinel ${name}:`, {
      acknowledged: pub.acked.length,
      statuses: Object.fromEntries(pub.statuses),
      ...counts,
      notRecovered: subs.reduce((n, s) => n + s.notRecovered, 0),
    });
    expect(counts).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
    // Nothing but 200 and 503: no 500, no hang, no 2xx for a write the failover dropped.
    expect([...pub.statuses.keys()].every((k) => k === 200 || k === 503)).toBe(true);
    expect(pub.acked.length).toBeGreaterThan(500);
    // No node had to declare history lost: nothing it delivered was taken back.
    expect(subs.every((s) => s.notRecovered === 0)).toBe(true);
    for (const n of nodes) expect((await fetch(`${n.url}/readyz`)).status).toBe(200);
  }

  it('SENTINEL FAILOVER during a publish stream: every 2xx id arrives once, in order; the switch answers 503', async () => {
    const { setup, nodes, subs } = await cluster();
    const before = await setup.masterPort();
    let failover: Promise<unknown> | undefined;
    const pub = publishStream(
      () => nodes.map((n) => n.url),
      4000,
      5,
      'switch',
      () => [CHANNEL],
      (i) => {
        if (i === 300) failover = setup.sentinel().call('SENTINEL', 'FAILOVER', MASTER_NAME);
      },
    );
    await pub.done;
    expect(await failover).toBe('OK');
    const after = await setup.masterPort();
    expect(after).not.toBe(before);
    await expectNothingLost('failover', setup.servers, nodes, subs, pub);
    // Every relay connection followed the master: the new one serves them all.
    const master = setup.servers.find((s) => s.port === after)!;
    const names =
      ((await master.client().call('CLIENT', 'LIST')) as string).match(/name=pushrelay-\S+/g) ?? [];
    for (const role of ['command', 'subscriber', 'adapter-sub']) {
      expect(names.filter((n) => n === `name=pushrelay-${role}`).length, role).toBe(nodes.length);
    }
  });

  it('the master SIGKILLed during a publish stream, then back as a replica: nothing acknowledged is lost', async () => {
    const { setup, nodes, subs } = await cluster();
    const before = await setup.masterPort();
    const old = setup.servers.find((s) => s.port === before)!;
    let crash: Promise<void> | undefined;
    const pub = publishStream(
      () => nodes.map((n) => n.url),
      4000,
      5,
      'crash',
      () => [CHANNEL],
      (i) => {
        if (i === 300) {
          crash = (async () => {
            await old.kill();
            // Back (empty: no persistence) once the sentinels agree on the
            // promoted replica; they make it a replica of the new master.
            await setup.movedFrom(before);
            await old.restart();
          })();
        }
      },
    );
    await pub.done;
    await crash;
    expect(pub.statuses.get(503)).toBeGreaterThan(0);
    await expectNothingLost('master killed', setup.servers, nodes, subs, pub);
  });

  it('a connection ioredis gives up on (a failover notice while it asks the sentinels) connects again; a subscriber resubscribes', async () => {
    const setup = await startSentinels();
    cleanup.push(() => setup.stop());
    const target = parseRedisUrl(setup.url)!;
    const log = pino({ level: 'silent' });
    const command = createRedis(target, 'command', log);
    const subscriber = createRedis(target, 'subscriber', log);
    cleanup.push(() => {
      command.disconnect();
      subscriber.disconnect();
    });
    await waitFor(() => command.status === 'ready' && subscriber.status === 'ready', {
      what: 'both connections up',
    });
    const got: string[] = [];
    subscriber.on('message', (_channel: string, message: string) => got.push(message));
    await subscriber.subscribe('probe');
    for (const client of [command, subscriber]) {
      // Not events.once: ioredis emits 'error' just before it ends the connection.
      const ended = new Promise((resolve) => client.once('end', resolve));
      // What ioredis's failover detector does on +switch-master, at the moment it
      // loses: while the reconnect is still asking the sentinels for the master.
      client.once('connecting', () =>
        setImmediate(() =>
          (client as unknown as { connector: { disconnect(): void } }).connector.disconnect(),
        ),
      );
      (client as unknown as { stream: Socket }).stream.destroy();
      // ioredis ended it (the race happened), and it comes back anyway.
      await ended;
    }
    await waitFor(async () => (await command.ping().catch((e: Error) => e.message)) === 'PONG', {
      what: 'the command connection back',
    });
    await waitFor(
      async () => {
        await command.publish('probe', 'after');
        return got.includes('after');
      },
      { what: 'the subscriber back, subscribed again' },
    );
  });

  it('SENTINEL FAILOVER while apps XADD to the ingest stream: every entry once, in XADD order per channel', async () => {
    const { setup, nodes } = await cluster();
    const channels = ['failover:x0', 'failover:x1', 'failover:x2', 'failover:x3'];
    const urls = () => nodes.map((n) => n.url);
    const subs = channels.map((c, k) => new RecoveringSubscriber(urls, `x${k}`, [c], k));
    await Promise.all(subs.map((s) => s.connect()));
    cleanup.push(() => {
      for (const s of subs) s.close();
    });
    // The app's own client finds the master through the sentinels, as a Rails or Laravel app's does,
    // and sends an entry again when Redis did not answer or did not confirm it on the replica (WAIT:
    // replication is asynchronous, so without it a failover may drop an acknowledged XADD; the
    // entry's `id` makes a repeat harmless).
    const producer = new Redis({
      sentinels: setup.sentinelPorts.map((port) => ({ host: '127.0.0.1', port })),
      name: MASTER_NAME,
      maxRetriesPerRequest: 1,
    });
    // The failover resets its connection; that surfaces as a rejected command, which the loop
    // below retries, and is not an unhandled error event.
    producer.on('error', () => {});
    cleanup.push(() => producer.disconnect());
    const before = await setup.masterPort();
    const total = 1500;
    let failover: Promise<unknown> | undefined;
    let retried = 0;
    for (let i = 0; i < total; i++) {
      const body = JSON.stringify({ event: 'x', data: { i }, channels: [channels[i % 4]], id: `sx-${i}` });
      for (;;) {
        try {
          await producer.xadd('pushrelay:publish', '*', 'body', body);
          if (Number(await producer.call('WAIT', '1', '1000')) >= 1) break;
          retried++;
        } catch {
          retried++;
          await sleep(100);
        }
      }
      if (i === 400) failover = setup.sentinel().call('SENTINEL', 'FAILOVER', MASTER_NAME);
      if (i % 10 === 0) await sleep(5);
    }
    expect(await failover).toBe('OK');
    expect(await setup.masterPort()).not.toBe(before);
    const expected = channels.map((_, k) => [...Array(total).keys()].filter((i) => i % 4 === k));
    const counts = await xaddCounts(subs, expected, 30_000);
    console.log('sentinel stream failover:', { entries: total, retried, ...counts });
    expect(counts).toEqual({ lost: 0, duplicated: 0, outOfXaddOrder: 0 });
  });

  it('is unready and answers 503 while the sentinels know no master of that name', async () => {
    const setup = await startSentinels();
    cleanup.push(() => setup.stop());
    const node = await startInProcess(
      { REDIS_URL: setup.url.replace(`/${MASTER_NAME}`, '/nosuchmaster') },
      { waitReady: false },
    );
    cleanup.push(() => node.stop());
    await sleep(500);
    expect((await fetch(`${node.url}/readyz`)).status).toBe(503);
    const res = await post(`${node.url}/v1/publish`, { event: 'e', users: ['u'] });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
  });
});
