// Redis ingest throughput at 1, 2 and 4 nodes on one Redis: the durable
// stream (`XADD <prefix>:publish`) and raw pub/sub (`PUBLISH`).
//
// For each size it starts a private redis-server and N relay processes
// (dist/main.js), warms them up, then hands the cluster M messages as fast as
// one Redis client can write them (XADD or PUBLISH in pipelines of 500) and
// times how long the cluster takes to publish all of them (the sum over the
// nodes of pushrelay_ingest_messages_total{outcome="published"}). Each
// message targets one of 1,000 users, so the stream's work spreads over its
// partitions. No sockets are connected: this measures the ingest path up to
// Redis (parse, validation, history append, idempotency, presence read,
// fan-out PUBLISH), not delivery to sockets (the scale-out section covers
// that). CPU is utime + stime of every relay process (/proc/<pid>/stat) plus
// Redis's own (INFO cpu).
//
// Writes the `ingest` section of bench/RESULTS.md. Run by `npm run
// bench:scale` after bench/scale.ts; not part of `npm test`.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { INGEST_ACTIVE_MS } from '../test/helpers/ingest.js';
import { scrape } from '../test/helpers/metrics.js';
import { type RelayNode, startProcess } from '../test/helpers/nodes.js';
import { type RedisServer, startRedis } from '../test/helpers/redis.js';
import { sleep, waitFor } from '../test/helpers/wait.js';
import { writeSection } from './sections.js';

const MESSAGES = Number(process.env.INGEST_MESSAGES ?? 20_000);
const WARMUP = 2000;
const USERS = 1000;
const SIZES = [1, 2, 4];
const MODES = ['stream', 'pubsub'] as const;
type Mode = (typeof MODES)[number];
const TICK_S = 1 / 100; // USER_HZ on Linux
/** How often the nodes' metrics are read to see whether the run is done. */
const POLL_MS = 500;

interface Run {
  mode: Mode;
  nodes: number;
  messages: number;
  seconds: number;
  relayCpu: number;
  redisCpu: number;
  perNode: number[];
  dropped: number;
  /** Relay CPU seconds the nodes spend per second doing nothing (heartbeats, leases, blocked reads, scrapes). */
  idleCpuPerSecond: number;
  /** The machine's 1-minute load average when the run started (other work on it competes for the cores). */
  load: number;
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_S;
}

async function redisCpu(redis: RedisServer): Promise<number> {
  const info = (await redis.client().info('cpu')) as string;
  const v = (k: string) => Number(new RegExp(`${k}:([0-9.]+)`).exec(info)?.[1] ?? 0);
  return v('used_cpu_sys') + v('used_cpu_user');
}

async function published(nodes: RelayNode[], source: string): Promise<number[]> {
  return Promise.all(
    nodes.map(async (n) =>
      (await scrape(n.url)).value('pushrelay_ingest_messages_total', { source, outcome: 'published' }),
    ),
  );
}

async function dropped(nodes: RelayNode[]): Promise<number> {
  const all = await Promise.all(
    nodes.map(async (n) =>
      (await scrape(n.url)).value('pushrelay_ingest_messages_total', { source: 'redis', outcome: 'dropped' }),
    ),
  );
  return all.reduce((a, b) => a + b, 0);
}

async function send(redis: RedisServer, mode: Mode, from: number, count: number): Promise<void> {
  const c = redis.client();
  for (let i = from; i < from + count; i += 500) {
    const p = c.pipeline();
    for (let j = i; j < Math.min(i + 500, from + count); j++) {
      const body = JSON.stringify({
        event: 'tick',
        users: [`u${(j * 7919) % USERS}`],
        data: { j, text: 'ingest bench' },
      });
      if (mode === 'stream') p.xadd('pushrelay:publish', '*', 'body', body);
      else p.publish('pushrelay:publish', body);
    }
    await p.exec();
  }
}

/** A relay process; tried again on a machine too busy to start one within the helper's 15 s. */
async function start(redis: RedisServer): Promise<RelayNode & { proc: { pid?: number } }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startProcess({
        REDIS_URL: redis.url,
        LOG_LEVEL: 'warn',
        PUSHRELAY_RATE_LIMIT: '0',
        PUSHRELAY_HISTORY_SIZE: '10',
        PUSHRELAY_INGEST_MAX_INFLIGHT: '1000000',
      });
    } catch (err) {
      if (attempt >= 3) throw err;
      console.log(`a node did not start in time (${(err as Error).message}); trying again`);
    }
  }
}

async function measure(mode: Mode, size: number): Promise<Run> {
  const redis = await startRedis();
  const nodes: (RelayNode & { proc: { pid?: number } })[] = [];
  const source = mode === 'stream' ? 'stream' : 'redis';
  try {
    for (let n = 0; n < size; n++) nodes.push(await start(redis));
    // Every node a member (and active) and, for the stream, the partitions shared out.
    await waitFor(
      async () =>
        (await Promise.all(nodes.map((n) => scrape(n.url)))).every(
          (m) => m.value('pushrelay_ingest_members') === size,
        ),
      {
        timeoutMs: 30_000,
        what: 'every node a member',
      },
    );
    await sleep(INGEST_ACTIVE_MS);
    if (mode === 'stream') {
      await waitFor(
        async () => {
          const owned = await Promise.all(
            nodes.map(async (n) => (await scrape(n.url)).value('pushrelay_ingest_partitions_owned')),
          );
          return owned.reduce((a, b) => a + b, 0) === 16 && owned.every((o) => o >= Math.floor(16 / size));
        },
        { timeoutMs: 30_000, what: 'partitions shared' },
      );
    }
    await send(redis, mode, 0, WARMUP);
    await waitFor(async () => (await published(nodes, source)).reduce((a, b) => a + b, 0) >= WARMUP, {
      timeoutMs: 60_000,
      what: 'warm-up',
    });
    // What the nodes cost idle over a few seconds (watched the way the run is watched).
    const idleFrom = nodes.map((n) => cpuSeconds(n.proc.pid!));
    const idleStart = performance.now();
    for (let k = 0; k < 10; k++) {
      await published(nodes, source);
      await sleep(POLL_MS);
    }
    const idleCpuPerSecond =
      nodes.reduce((sum, n, i) => sum + cpuSeconds(n.proc.pid!) - idleFrom[i]!, 0) /
      ((performance.now() - idleStart) / 1000);
    const load = loadavg()[0]!;
    const base = await published(nodes, source);
    const droppedBefore = await dropped(nodes);
    const cpuBefore = nodes.map((n) => cpuSeconds(n.proc.pid!));
    const redisBefore = await redisCpu(redis);
    const started = performance.now();
    await send(redis, mode, WARMUP, MESSAGES);
    // Done when every message is published (pub/sub: or when nothing moved for 3 s: the rest was dropped).
    let last = -1;
    let still = 0;
    for (;;) {
      const now =
        (await published(nodes, source)).reduce((a, b) => a + b, 0) - base.reduce((a, b) => a + b, 0);
      if (now >= MESSAGES) break;
      still = now === last ? still + 1 : 0;
      last = now;
      if (still > 6) break;
      await sleep(POLL_MS);
    }
    const seconds = (performance.now() - started) / 1000;
    const after = await published(nodes, source);
    return {
      mode,
      nodes: size,
      messages: after.reduce((a, b) => a + b, 0) - base.reduce((a, b) => a + b, 0),
      seconds,
      relayCpu: nodes.reduce((s, n, i) => s + cpuSeconds(n.proc.pid!) - cpuBefore[i]!, 0),
      redisCpu: (await redisCpu(redis)) - redisBefore,
      perNode: after.map((v, i) => v - base[i]!),
      dropped: (await dropped(nodes)) - droppedBefore,
      idleCpuPerSecond,
      load,
    };
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
  }
}

async function main(): Promise<void> {
  const runs: Run[] = [];
  for (const mode of MODES) {
    for (const size of SIZES) {
      console.log(`ingest: ${mode}, ${size} node(s)...`);
      const run = await measure(mode, size);
      console.log(JSON.stringify(run));
      runs.push(run);
    }
  }
  const f = (x: number, d = 0) => x.toFixed(d);
  const rows = runs.map((r) => {
    const base = runs.find((b) => b.mode === r.mode && b.nodes === 1)!;
    const rate = r.messages / r.seconds;
    const baseRate = base.messages / base.seconds;
    const busy = Math.max(0.001, r.relayCpu - r.idleCpuPerSecond * r.seconds);
    return `| ${r.mode === 'stream' ? '`XADD` stream' : '`PUBLISH` pub/sub'} | ${r.nodes} | ${r.messages} | ${f(rate)} | ${f(rate / baseRate, 2)}× | ${f(r.messages / r.relayCpu)} | ${f((r.relayCpu / r.messages) * 1e6)} | ${f((busy / r.messages) * 1e6)} | ${f((r.redisCpu / r.messages) * 1e6)} | ${r.perNode.join(' / ')} | ${r.dropped} | ${f(r.load, 1)} |`;
  });
  const rate = (mode: Mode, n: number) => {
    const r = runs.find((x) => x.mode === mode && x.nodes === n)!;
    return r.messages / r.seconds;
  };
  const text = `## Ingest: Redis stream and pub/sub at 1, 2 and 4 nodes

Written by \`npm run bench:scale\` (\`bench/ingest-scale.ts\`) on ${new Date().toISOString().slice(0, 10)}:
${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version},
${redisVersion()}. Redis, the relay processes and the load generator share this machine.

Each run starts a private redis-server and N relay processes, lets them share
the work (pub/sub members, stream partitions), sends ${WARMUP} messages to warm
up, then writes ${MESSAGES} messages as fast as one client can (pipelines of
500 \`XADD\`s or \`PUBLISH\`es), each to one of ${USERS} users, and times how long
the cluster takes to publish them all (no sockets connected: the ingest path up
to Redis, not socket delivery). CPU: every relay process's utime + stime, and
Redis's \`used_cpu_sys + used_cpu_user\`; "less the nodes' idle CPU" subtracts
what the same nodes burn per second when idle (heartbeats, lease renewals,
blocked stream reads, this script's metric reads), measured just before.
The load average says how much else was running on the machine.

| ingest | nodes | messages published | messages/s | vs 1 node | messages per relay CPU second | relay CPU µs per message | … less the nodes' idle CPU | Redis CPU µs per message | published per node | dropped | load average at start |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |
${rows.join('\n')}

Stream: ${f(rate('stream', 2) / rate('stream', 1), 2)}× the one-node rate at 2 nodes, ${f(rate('stream', 4) / rate('stream', 1), 2)}× at 4.
Pub/sub: ${f(rate('pubsub', 2) / rate('pubsub', 1), 2)}× at 2 nodes, ${f(rate('pubsub', 4) / rate('pubsub', 1), 2)}× at 4.

This machine has ${cpus().length} cores for Redis, every relay process and the load
generator together, so the cluster's rate cannot grow past what those cores
give: one relay already keeps about one core busy, a second one takes the
other, and four share the same two (their CPU per message shows whether the
work per message stays flat, which is what lets throughput grow on machines
with a core per node). The stream's work is spread by partition (see
"published per node"); its router does a JSON parse and an \`XADD\` per entry.
In pub/sub every node receives every message and drops the ones it does not
own after a CRC-32, which is the part that grows with the node count.
`;
  writeSection(resolve(import.meta.dirname, 'RESULTS.md'), 'ingest', text);
  console.log(text);
}

function redisVersion(): string {
  try {
    return `redis-server ${/v=(\S+)/.exec(execFileSync('redis-server', ['--version']).toString())?.[1] ?? '?'}`;
  } catch {
    return 'redis-server (version unknown)';
  }
}

await main();
