// Per-node cost of targeted traffic at 1, 2 and 4 nodes on one Redis.
//
// Each node holds the same number of users, and the publish rate grows with
// the node count, so every node should carry the same load whatever the size
// of the cluster. Publishes go over HTTP round-robin to the nodes, each to one
// user drawn uniformly from all users. Per node it reads the Redis pub/sub
// messages it received (pushrelay_redis_messages_received_total) and its CPU
// time (utime + stime from /proc/<pid>/stat), and divides both by the node's
// share of the publishes (publishes / nodes). A node that received every
// publish (the pattern-subscription way) would show N messages per share.
//
// Writes its section of bench/RESULTS.md (between the scale markers). Run with `npm run bench:scale` (it builds
// first); not part of `npm test`.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { connectClient, type TestClient } from '../test/helpers/clients.js';
import { KEY, token } from '../test/helpers/env.js';
import { scrape } from '../test/helpers/metrics.js';
import { type RelayNode, startProcess } from '../test/helpers/nodes.js';
import { startRedis } from '../test/helpers/redis.js';
import { sleep, waitFor } from '../test/helpers/wait.js';
import { writeScale } from './sections.js';

const USERS_PER_NODE = Number(process.env.SCALE_USERS_PER_NODE ?? 100);
const PUBLISHES_PER_NODE = Number(process.env.SCALE_PUBLISHES_PER_NODE ?? 1500);
const RATE_PER_NODE = Number(process.env.SCALE_RATE_PER_NODE ?? 60); // publishes per second
const SIZES = [1, 2, 4];
const BOUND = 1.25;
const TICK_S = 1 / 100; // USER_HZ on Linux

interface NodeFigures {
  node: string;
  received: number;
  addressed: number;
  cpuMs: number;
}

interface Run {
  nodes: number;
  publishes: number;
  seconds: number;
  perNode: NodeFigures[];
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_S; // utime, stime
}

async function receivedTotal(url: string): Promise<number> {
  return (await scrape(url)).value('pushrelay_redis_messages_received_total');
}

async function publish(url: string, user: string, i: number): Promise<void> {
  const res = await fetch(`${url}/v1/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY.secret}` },
    body: JSON.stringify({ event: 'tick', users: [user], data: { i } }),
  });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`publish answered ${res.status}`);
}

async function measure(size: number): Promise<Run> {
  const redis = await startRedis();
  const nodes: (RelayNode & { proc: { pid?: number } })[] = [];
  const clients: TestClient[] = [];
  try {
    for (let n = 0; n < size; n++) {
      nodes.push(
        await startProcess({
          REDIS_URL: redis.url,
          LOG_LEVEL: 'warn',
          PUSHRELAY_RATE_LIMIT: '0',
          PUSHRELAY_PRESENCE_TTL_SECONDS: '9',
        }),
      );
    }
    const users: { name: string; node: number }[] = [];
    for (let n = 0; n < size; n++) {
      for (let k = 0; k < USERS_PER_NODE; k++) {
        const name = `u${n}-${k}`;
        users.push({ name, node: n });
        clients.push(await connectClient(nodes[n]!.url, await token(name)));
      }
    }
    const received = () => clients.reduce((sum, c) => sum + c.events('tick').length, 0);

    // Warm up (JIT, connections, every user channel subscribed), then measure.
    for (let i = 0; i < 200; i++) await publish(nodes[i % size]!.url, users[i % users.length]!.name, -1);
    await waitFor(() => received() >= 200, { timeoutMs: 30_000, what: 'warm-up deliveries' });
    await sleep(500);

    const total = PUBLISHES_PER_NODE * size;
    const rate = RATE_PER_NODE * size;
    const addressed = new Array<number>(size).fill(0);
    const targets = Array.from({ length: total }, () => {
      const u = users[Math.floor(Math.random() * users.length)]!;
      addressed[u.node]!++;
      return u.name;
    });
    const startReceived = received();
    const before = await Promise.all(
      nodes.map(async (n) => ({ msgs: await receivedTotal(n.url), cpu: cpuSeconds(n.proc.pid!) })),
    );
    const started = Date.now();
    const inflight = new Set<Promise<void>>();
    for (let i = 0; i < total; i++) {
      await sleep(Math.max(0, started + (i * 1000) / rate - Date.now()));
      const p = publish(nodes[i % size]!.url, targets[i]!, i).finally(() => inflight.delete(p));
      inflight.add(p);
      if (inflight.size >= 256) await Promise.race(inflight);
    }
    await Promise.all(inflight);
    await waitFor(() => received() - startReceived >= total, { timeoutMs: 60_000, what: 'every delivery' });
    const seconds = (Date.now() - started) / 1000;
    const after = await Promise.all(
      nodes.map(async (n) => ({ msgs: await receivedTotal(n.url), cpu: cpuSeconds(n.proc.pid!) })),
    );
    return {
      nodes: size,
      publishes: total,
      seconds,
      perNode: nodes.map((n, i) => ({
        node: n.id,
        received: after[i]!.msgs - before[i]!.msgs,
        addressed: addressed[i]!,
        cpuMs: (after[i]!.cpu - before[i]!.cpu) * 1000,
      })),
    };
  } finally {
    for (const c of clients) c.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
  }
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main(): Promise<void> {
  const runs: Run[] = [];
  for (const size of SIZES) {
    console.log(`measuring ${size} node(s)...`);
    const run = await measure(size);
    runs.push(run);
    console.log(JSON.stringify(run));
  }
  const rows = runs.map((r) => {
    const share = r.publishes / r.nodes;
    return {
      nodes: r.nodes,
      publishes: r.publishes,
      rate: Math.round(r.publishes / r.seconds),
      receivedPerShare: mean(r.perNode.map((p) => p.received / share)),
      receivedOfAll: mean(r.perNode.map((p) => p.received / r.publishes)),
      receivedPerAddressed: mean(r.perNode.map((p) => p.received / p.addressed)),
      cpuUsPerShare: mean(r.perNode.map((p) => (p.cpuMs * 1000) / share)),
      cpuMax: Math.max(...r.perNode.map((p) => (p.cpuMs * 1000) / share)),
    };
  });
  const base = rows[0]!;
  const msgRatio = rows.at(-1)!.receivedPerShare / base.receivedPerShare;
  const cpuRatio = rows.at(-1)!.cpuUsPerShare / base.cpuUsPerShare;
  const pass = msgRatio <= BOUND && cpuRatio <= BOUND;
  const f = (x: number, d = 2) => x.toFixed(d);
  const table = [
    '| nodes | publishes | publishes/s | Redis msgs received per node, per publish share | … as a fraction of all publishes | … per publish addressed to the node | CPU µs per node, per publish share (mean) | (worst node) | vs 1 node |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.nodes} | ${r.publishes} | ${r.rate} | ${f(r.receivedPerShare, 3)} | ${f(r.receivedOfAll, 3)} | ${f(r.receivedPerAddressed, 3)} | ${f(r.cpuUsPerShare, 0)} | ${f(r.cpuMax, 0)} | ${f(r.cpuUsPerShare / base.cpuUsPerShare)}× CPU, ${f(r.receivedPerShare / base.receivedPerShare)}× msgs |`,
    ),
  ];
  const text = `# Scale-out: per-node cost of targeted publishes

Written by \`npm run bench:scale\` (\`bench/scale.ts\`) on ${new Date().toISOString().slice(0, 10)}:
${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version},
${execRedisVersion()}. Everything (Redis, the relay processes, the load
generator and its sockets) shares this machine.

Each run starts a private redis-server and N relay processes (\`dist/main.js\`),
connects ${USERS_PER_NODE} users per node (one WebSocket each), then sends
${PUBLISHES_PER_NODE} × N publishes at ${RATE_PER_NODE} × N per second over
HTTP, round-robin over the nodes, each to one user drawn uniformly from all
users, and waits until every message reached its socket. The load per node is
the same at every size, so a flat cost per node is what scaling out should
look like. Per node: Redis pub/sub messages received
(\`pushrelay_redis_messages_received_total\`, all roles) and CPU time
(utime + stime from \`/proc/<pid>/stat\`, 10 ms ticks), each divided by the
node's share of the publishes (publishes / N); the means over nodes are shown.

${table.join('\n')}

At 4 nodes: ${f(msgRatio)}× the one-node Redis messages and ${f(cpuRatio)}× the
one-node CPU per publish share; the bound is ${BOUND}×: **${pass ? 'met' : 'NOT met'}**.

A node receives one Redis message per publish addressed to one of its own
users (the "per publish addressed" column stays at 1.0) and none for the
others: at N nodes it sees 1/N of the stream. With the Socket.IO adapter's
old pattern subscription, or a single shared delivery channel, every node
would receive every publish: N messages per share at N nodes.
`;
  writeScale(resolve(import.meta.dirname, 'RESULTS.md'), text.replace(/^# /m, '## '));
  console.log(text);
  if (!pass) process.exitCode = 1;
}

function execRedisVersion(): string {
  try {
    const out = execFileSync('redis-server', ['--version']).toString();
    return `redis-server ${/v=(\S+)/.exec(out)?.[1] ?? '?'}`;
  } catch {
    return 'redis-server (version unknown)';
  }
}

await main();
