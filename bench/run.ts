import { execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { startRedis } from '../test/helpers/redis.js';
import { sleep } from '../test/helpers/wait.js';
import { type BenchConfig, loadBenchConfig, type SystemDef } from './config.js';
import type { PhaseArgs, PhaseResult, SystemTarget } from './protocol.js';
import {
  type Measured,
  type PairedResult,
  PEERS,
  type RunMeta,
  renderResults,
  renderTable,
  type SystemResult,
} from './report.js';
import { writeKeepingScale } from './sections.js';
import {
  cpuSeconds,
  type LoadGenerator,
  perfRecord,
  type ServerProcess,
  startLoadGenerator,
  startServer,
} from './servers.js';
import { summarize } from './stats.js';

// `npm run bench`: one system after another, each on fresh processes and the
// same private Redis, driven by one load-generator process; writes
// bench/RESULTS.md. Sizes come from BENCH_* variables (bench/config.ts).

const ROOT = resolve(import.meta.dirname, '..');
const JWT_SECRET = randomBytes(32).toString('hex');
const PUBLISHER_SECRET = randomBytes(32).toString('hex');

type RedisServer = Awaited<ReturnType<typeof startRedis>>;

function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

async function startSystem(
  def: SystemDef,
  redis: RedisServer,
  run: number,
  perf: boolean,
): Promise<ServerProcess[]> {
  const servers: ServerProcess[] = [];
  for (let n = 0; n < def.nodes; n++) {
    const name = `${def.id}-${String.fromCharCode(97 + n)}`;
    const env: Record<string, string> =
      def.kind === 'pushrelay'
        ? {
            LOG_LEVEL: 'warn',
            PUSHRELAY_NODE_ID: `bench-${String.fromCharCode(97 + n)}`,
            PUSHRELAY_KEYS: `bench:${PUBLISHER_SECRET}`,
            PUSHRELAY_JWT_SECRET: JWT_SECRET,
            // On, as in production, but too high to refuse anything the benchmark sends.
            PUSHRELAY_RATE_LIMIT: '100000000',
            // The benchmark connects its clients faster than the default 500 handshakes/s
            // when the machine is quiet; a refused handshake would fail the run.
            PUSHRELAY_CONNECT_RATE: '1000000',
            PUSHRELAY_DRAIN_SECONDS: '0',
            PUSHRELAY_PREFIX: `bench${run}`,
            ...(def.redis ? { REDIS_URL: redis.url } : {}),
          }
        : { ...(def.redis ? { REDIS_URL: redis.url, ADAPTER_KEY: `bench${run}` } : {}) };
    servers.push(await startServer({ name, kind: def.kind, env, perfMap: perf }));
  }
  return servers;
}

/** What the load generator needs of a system: where its clients connect and where it publishes. */
function targetOf(def: SystemDef, servers: readonly ServerProcess[]): SystemTarget {
  return {
    kind: def.kind,
    urls: servers.map((s) => s.url),
    publishUrl: servers[0]!.url,
    ...(def.kind === 'pushrelay' ? { secret: PUBLISHER_SECRET, jwtSecret: JWT_SECRET } : {}),
  };
}

/** A targeted phase to the first fan-out's users: saturated when `rate` is undefined. */
function targetedArgs(cfg: BenchConfig, rate: number | undefined, durationMs: number): PhaseArgs {
  return {
    shape: 'targeted',
    ...(rate === undefined ? {} : { rate }),
    concurrency: cfg.targetedConcurrency,
    durationMs,
    users: cfg.fanouts[0]!,
    batchSize: 1,
    window: cfg.targetedWindow,
    drainMs: cfg.drainMs,
  };
}

let admin: ReturnType<RedisServer['client']> | undefined;

async function redisInfo(redis: RedisServer, field: string): Promise<number> {
  admin ??= redis.client();
  const text = await admin.info();
  const m = new RegExp(`^${field}:(\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

async function runSystem(
  def: SystemDef,
  cfg: BenchConfig,
  redis: RedisServer,
  redisPid: number,
  run: number,
  repetition: number,
): Promise<SystemResult> {
  const result: SystemResult = { def, run: repetition, phases: {}, memory: undefined };
  admin ??= redis.client();
  await admin.flushall();
  const servers = await startSystem(def, redis, run, cfg.perfDir !== undefined);
  const load = startLoadGenerator();
  const enabled = (p: string) => cfg.phases.size === 0 || cfg.phases.has(p);
  try {
    await load.send({ cmd: 'init', target: targetOf(def, servers), paddingBytes: cfg.paddingBytes });

    const measure = async (name: string, args: PhaseArgs): Promise<void> => {
      const profiling = cfg.profileDir !== undefined;
      if (profiling) await Promise.all(servers.map((s) => s.profileStart(cfg.profileIntervalUs)));
      const perf = cfg.perfDir
        ? servers.map((s) =>
            perfRecord(s.pid, join(cfg.perfDir!, `${def.id}-${name}-${s.name}-run${repetition}.perf`)),
          )
        : [];
      const before = sampleCpu(servers, def.redis ? redisPid : undefined, load);
      const started = performance.now();
      const phase = await load.send<PhaseResult>({ cmd: 'phase', args });
      const wallMs = performance.now() - started;
      const after = sampleCpu(servers, def.redis ? redisPid : undefined, load);
      await Promise.all(perf.map((p) => p.stop()));
      if (profiling) {
        await Promise.all(
          servers.map((s) =>
            s.profileStop(join(cfg.profileDir!, `${def.id}-${name}-${s.name}-run${repetition}.cpuprofile`)),
          ),
        );
      }
      const m: Measured = {
        phase,
        wallMs,
        cpu: {
          servers: after.servers - before.servers,
          redis: after.redis - before.redis,
          load: after.load - before.load,
        },
      };
      result.phases[name] = m;
      const l = phase.latency;
      log(
        `${def.id} ${name}: ${phase.delivered}/${phase.expected} delivered in ${(phase.elapsedMs / 1000).toFixed(1)} s, ` +
          `cpu servers ${m.cpu.servers.toFixed(2)} s redis ${m.cpu.redis.toFixed(2)} s load ${m.cpu.load.toFixed(2)} s, ` +
          `p50 ${l.p50.toFixed(1)} ms p99 ${l.p99.toFixed(1)} ms, lost ${phase.lost} dup ${phase.duplicates} http errors ${phase.httpErrors}`,
      );
    };

    const [small, ...rest] = cfg.fanouts;
    const large = rest.length > 0 ? rest[rest.length - 1]! : small!;
    // Memory first, on fresh processes: the growth from `small` to `large`
    // connections, so one-time costs (pools, JIT, first allocations) cancel.
    log(`${def.id}: connecting ${small} clients`);
    await load.send({ cmd: 'connect', from: 0, to: small!, batch: cfg.connectBatch });
    await sleep(1000);
    const mem1 = await Promise.all(servers.map((s) => s.memory()));
    if (cfg.heapDir) await servers[0]!.heapSnapshot(join(cfg.heapDir, `${def.id}-${small}.heapsnapshot`));
    const redis1 = def.redis ? await redisInfo(redis, 'used_memory') : 0;
    if (large > small!) {
      log(`${def.id}: connecting ${large - small!} more clients`);
      await load.send({ cmd: 'connect', from: small!, to: large, batch: cfg.connectBatch });
      await sleep(1000);
      const mem2 = await Promise.all(servers.map((s) => s.memory()));
      if (cfg.heapDir) await servers[0]!.heapSnapshot(join(cfg.heapDir, `${def.id}-${large}.heapsnapshot`));
      const redis2 = def.redis ? await redisInfo(redis, 'used_memory') : 0;
      const n = large - small!;
      const sum = (f: (m: NodeJS.MemoryUsage) => number) =>
        mem2.reduce((a, m, i) => a + f(m) - f(mem1[i]!), 0) / n;
      result.memory = {
        connections: n,
        rssPerConnection: sum((m) => m.rss),
        heapPerConnection: sum((m) => m.heapUsed + m.external),
        redisPerConnection: def.redis ? (redis2 - redis1) / n : undefined,
        rssTotal: mem2.reduce((a, m) => a + m.rss, 0),
      };
    }

    const broadcast = (n: number, rate: number | undefined): PhaseArgs => ({
      shape: 'broadcast',
      ...(rate === undefined ? {} : { rate }),
      concurrency: cfg.broadcastConcurrency,
      durationMs: cfg.durationMs,
      users: n,
      batchSize: 1,
      window: cfg.broadcastWindow,
      drainMs: cfg.drainMs,
    });
    for (const n of [...cfg.fanouts].reverse()) {
      if (n < large) {
        log(`${def.id}: disconnecting down to ${n} clients`);
        await load.send({ cmd: 'disconnect', from: n, to: large });
        await sleep(2000);
      }
      if (enabled('broadcast')) {
        await measure(`broadcast-${n}-rate`, broadcast(n, cfg.broadcastRate));
        await measure(`broadcast-${n}-max`, broadcast(n, undefined));
      }
    }
    const users = small!;
    if (enabled('targeted')) {
      const targeted = (rate: number | undefined): PhaseArgs =>
        targetedArgs(cfg, rate, rate === undefined ? cfg.durationMs : cfg.targetedRateDurationMs);
      await measure('targeted-rate', targeted(cfg.targetedRate));
      await measure('targeted-max', targeted(undefined));
    }
    if (enabled('batch')) {
      await measure('batch-max', {
        shape: 'batch',
        concurrency: cfg.batchConcurrency,
        durationMs: cfg.durationMs,
        users,
        batchSize: cfg.batchSize,
        window: cfg.targetedWindow * 4,
        drainMs: cfg.drainMs,
      });
    }
    await load.send({ cmd: 'close' }).catch(() => {});
  } catch (err) {
    result.error = String((err as Error).message ?? err);
    log(`${def.id} failed: ${result.error}`);
    for (const s of servers) log(`${s.name} output:\n${s.output.slice(-20).join('\n')}`);
  } finally {
    await load.stop();
    await Promise.all(servers.map((s) => s.stop()));
  }
  return result;
}

/**
 * The fixed-rate targeted phase of a relay and its peer measured side by side:
 * both systems up at once, each with its own load generator and clients, taking
 * turns at the rate in short segments (ABBA order) until each has run
 * targetedRateDurationMs. The machine's speed drifts by the minute here (the
 * load generator's CPU for the same phase varies 1.4-2.8 s between passes),
 * and a system measured in its own time slot carries that drift into its p99;
 * interleaving gives both the same machine. The idle system only holds its
 * sockets meanwhile.
 */
async function runPaired(
  relay: SystemDef,
  peer: SystemDef,
  cfg: BenchConfig,
  redis: RedisServer,
  nextRun: () => number,
  repetition: number,
): Promise<PairedResult> {
  const result: PairedResult = { relay: relay.id, peer: peer.id, run: repetition, segments: 0 };
  admin ??= redis.client();
  await admin.flushall();
  const sides: {
    def: SystemDef;
    servers: ServerProcess[];
    load: LoadGenerator;
    samples: number[];
    phases: PhaseResult[];
  }[] = [];
  try {
    for (const def of [relay, peer]) {
      const servers = await startSystem(def, redis, nextRun(), false);
      const load = startLoadGenerator();
      sides.push({ def, servers, load, samples: [], phases: [] });
      await load.send({ cmd: 'init', target: targetOf(def, servers), paddingBytes: cfg.paddingBytes });
      await load.send({ cmd: 'connect', from: 0, to: cfg.fanouts[0]!, batch: cfg.connectBatch });
    }
    await sleep(1000);
    const args = (rate: number | undefined, durationMs: number, samples: boolean): PhaseArgs => ({
      ...targetedArgs(cfg, rate, durationMs),
      samples,
      reuseConnections: true,
    });
    // Warm-up, discarded: the JIT compiles the targeted path on both before anything counts.
    for (const side of sides) {
      await side.load.send({ cmd: 'phase', args: args(undefined, 1000, false) });
      await side.load.send({ cmd: 'phase', args: args(cfg.targetedRate, 1000, false) });
    }
    const segments = Math.max(1, Math.ceil(cfg.targetedRateDurationMs / cfg.pairedSegmentMs));
    for (let k = 0; k < segments; k++) {
      for (const side of k % 2 === 0 ? sides : [...sides].reverse()) {
        const phase = await side.load.send<PhaseResult>({
          cmd: 'phase',
          args: args(cfg.targetedRate, cfg.pairedSegmentMs, true),
        });
        side.samples.push(...(phase.samples ?? []));
        side.phases.push({ ...phase, samples: undefined });
      }
    }
    result.segments = segments;
    const pooled = (side: (typeof sides)[number]): PhaseResult => {
      const sum = (f: (p: PhaseResult) => number) => side.phases.reduce((a, p) => a + f(p), 0);
      return {
        requests: sum((p) => p.requests),
        httpErrors: sum((p) => p.httpErrors),
        messages: sum((p) => p.messages),
        recipients: side.phases[0]?.recipients ?? 0,
        expected: sum((p) => p.expected),
        delivered: sum((p) => p.delivered),
        lost: sum((p) => p.lost),
        duplicates: sum((p) => p.duplicates),
        misrouted: sum((p) => p.misrouted),
        strays: sum((p) => p.strays),
        disconnects: side.phases[side.phases.length - 1]?.disconnects ?? 0,
        elapsedMs: sum((p) => p.elapsedMs),
        sendMs: sum((p) => p.sendMs),
        latency: summarize(side.samples),
      };
    };
    result.relayPhase = pooled(sides[0]!);
    result.peerPhase = pooled(sides[1]!);
    const l = (p: PhaseResult) => `p50 ${p.latency.p50.toFixed(2)} ms p99 ${p.latency.p99.toFixed(2)} ms`;
    log(
      `paired ${relay.id} / ${peer.id}: ${segments} segments of ${cfg.pairedSegmentMs / 1000} s each; ` +
        `${relay.id} ${l(result.relayPhase)}, ${peer.id} ${l(result.peerPhase)}, ` +
        `lost ${result.relayPhase.lost} / ${result.peerPhase.lost} dup ${result.relayPhase.duplicates} / ${result.peerPhase.duplicates}`,
    );
    for (const side of sides) await side.load.send({ cmd: 'close' }).catch(() => {});
  } catch (err) {
    result.error = String((err as Error).message ?? err);
    log(`paired ${relay.id} / ${peer.id} failed: ${result.error}`);
    for (const side of sides)
      for (const x of side.servers) log(`${x.name} output:\n${x.output.slice(-20).join('\n')}`);
  } finally {
    for (const side of sides) {
      await side.load.stop();
      await Promise.all(side.servers.map((x) => x.stop()));
    }
  }
  return result;
}

function sampleCpu(servers: ServerProcess[], redisPid: number | undefined, load: LoadGenerator) {
  return {
    servers: servers.reduce((a, s) => a + cpuSeconds(s.pid), 0),
    redis: redisPid === undefined ? 0 : cpuSeconds(redisPid),
    load: cpuSeconds(load.pid),
  };
}

function git(args: string): string {
  try {
    return execSync(`git ${args}`, { cwd: ROOT }).toString().trim();
  } catch {
    return 'unknown';
  }
}

/** Keeps the README's Performance table the one of the last full run. */
function updateReadme(table: string): void {
  const path = resolve(ROOT, 'README.md');
  const text = readFileSync(path, 'utf8');
  const start = '<!-- bench:start -->';
  const end = '<!-- bench:end -->';
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < i) return;
  writeFileSync(path, `${text.slice(0, i + start.length)}\n${table}\n${text.slice(j)}`);
  log('updated the README table');
}

async function main(): Promise<void> {
  const cfg = loadBenchConfig();
  for (const dir of [cfg.profileDir, cfg.perfDir, cfg.heapDir]) if (dir) mkdirSync(dir, { recursive: true });
  const started = new Date();
  const load1 = loadavg();
  const redis = await startRedis();
  const redisPid = await redisInfo(redis, 'process_id');
  const results: SystemResult[] = [];
  const paired: PairedResult[] = [];
  const pairs = cfg.systems.flatMap((def) => {
    const peer = cfg.systems.find((p) => p.id === PEERS[def.id]);
    return peer ? [[def, peer] as const] : [];
  });
  const pairing = cfg.phases.size === 0 || cfg.phases.has('paired');
  try {
    let run = 0;
    for (let r = 1; r <= cfg.repeat; r++) {
      // Every other repetition runs backwards, so a drift in the machine's load does not favour one system.
      const order = r % 2 === 1 ? cfg.systems : [...cfg.systems].reverse();
      for (const def of order) {
        log(`=== ${def.label} (run ${r} of ${cfg.repeat})`);
        results.push(await runSystem(def, cfg, redis, redisPid, ++run, r));
      }
      if (!pairing) continue;
      for (const [relay, peer] of pairs) {
        log(`=== ${relay.label} and ${peer.label}, paired (run ${r} of ${cfg.repeat})`);
        paired.push(await runPaired(relay, peer, cfg, redis, () => ++run, r));
      }
    }
  } finally {
    await redis.stop();
  }
  const meta: RunMeta = {
    started: started.toISOString(),
    durationS: (Date.now() - started.getTime()) / 1000,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: totalmem() / 2 ** 30,
    node: process.version,
    commit: `${git('rev-parse --short HEAD')}${git('status --porcelain -- src bench') ? ' (with uncommitted changes)' : ''}`,
    loadBefore: load1,
    loadAfter: loadavg(),
    redis: execSync('redis-server --version').toString().trim(),
  };
  const out = resolve(ROOT, cfg.out);
  mkdirSync(dirname(out), { recursive: true });
  writeKeepingScale(out, renderResults(meta, cfg, results, paired));
  log(`wrote ${out}`);
  if (out === resolve(ROOT, 'bench/RESULTS.md')) updateReadme(renderTable(cfg, results));
  if (results.some((r) => r.error) || paired.some((p) => p.error)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
