import type { BenchConfig, SystemDef } from './config.js';
import type { PhaseResult } from './protocol.js';
import { cpuMicrosPerUnit, median, ratio } from './stats.js';

// Turns the measurements of one run into bench/RESULTS.md. Every ratio is
// computed here, from figures of the same run.

export interface Measured {
  phase: PhaseResult;
  wallMs: number;
  /** CPU seconds used during the phase by the system's node processes, its Redis, and the load generator. */
  cpu: { servers: number; redis: number; load: number };
}

export interface MemoryResult {
  connections: number;
  rssPerConnection: number;
  heapPerConnection: number;
  redisPerConnection: number | undefined;
  rssTotal: number;
}

export interface SystemResult {
  def: SystemDef;
  /** Which repetition of the whole sequence this was (1-based). */
  run: number;
  phases: Record<string, Measured>;
  memory: MemoryResult | undefined;
  error?: string;
}

/** The paired latency phase of one pass: a relay and its peer up at once, taking turns (bench/run.ts). */
export interface PairedResult {
  relay: string;
  peer: string;
  run: number;
  segments: number;
  /** The segments of each side pooled: counts summed, latency over every sample. */
  relayPhase?: PhaseResult;
  peerPhase?: PhaseResult;
  error?: string;
}

export interface RunMeta {
  started: string;
  durationS: number;
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  commit: string;
  loadBefore: number[];
  loadAfter: number[];
  redis: string;
}

const BASELINE = 'socketio';

/** Server CPU of a phase: node processes plus the Redis the system depends on. */
function serverCpu(m: Measured): number {
  return m.cpu.servers + m.cpu.redis;
}

export interface Figures {
  broadcast: Record<
    number,
    {
      perSecond?: number;
      cpuPerDelivery?: number;
      p50?: number;
      p99?: number;
    }
  >;
  targeted: { perSecond?: number; cpuPerRequest?: number; p50?: number; p99?: number };
  batch: { perSecond?: number; cpuPerMessage?: number };
  memoryKiB?: number;
  heapKiB?: number;
  lost: number;
  duplicates: number;
}

export function figures(r: SystemResult, fanouts: readonly number[]): Figures {
  const f: Figures = { broadcast: {}, targeted: {}, batch: {}, lost: 0, duplicates: 0 };
  for (const n of fanouts) {
    const max = r.phases[`broadcast-${n}-max`];
    const rate = r.phases[`broadcast-${n}-rate`];
    f.broadcast[n] = {
      perSecond: max ? max.phase.delivered / (max.phase.elapsedMs / 1000) : undefined,
      cpuPerDelivery: max ? cpuMicrosPerUnit(serverCpu(max), max.phase.delivered) : undefined,
      p50: rate?.phase.latency.p50,
      p99: rate?.phase.latency.p99,
    };
  }
  const tMax = r.phases['targeted-max'];
  const tRate = r.phases['targeted-rate'];
  f.targeted = {
    perSecond: tMax ? tMax.phase.messages / (tMax.phase.elapsedMs / 1000) : undefined,
    cpuPerRequest: tMax ? cpuMicrosPerUnit(serverCpu(tMax), tMax.phase.messages) : undefined,
    p50: tRate?.phase.latency.p50,
    p99: tRate?.phase.latency.p99,
  };
  const b = r.phases['batch-max'];
  f.batch = {
    perSecond: b ? b.phase.messages / (b.phase.elapsedMs / 1000) : undefined,
    cpuPerMessage: b ? cpuMicrosPerUnit(serverCpu(b), b.phase.messages) : undefined,
  };
  f.memoryKiB = r.memory ? r.memory.rssPerConnection / 1024 : undefined;
  f.heapKiB = r.memory ? r.memory.heapPerConnection / 1024 : undefined;
  for (const m of Object.values(r.phases)) {
    f.lost += m.phase.lost;
    f.duplicates += m.phase.duplicates;
  }
  return f;
}

/** Field by field median of several runs' figures; lost and duplicated are summed, never a median. */
function medianFigures(list: readonly Figures[]): Figures {
  const merge = (items: unknown[]): unknown => {
    const present = items.filter((i) => i !== undefined);
    if (present.length === 0) return undefined;
    if (typeof present[0] === 'number') return median(items as (number | undefined)[]);
    const keys = new Set(present.flatMap((i) => Object.keys(i as object)));
    const out: Record<string, unknown> = {};
    for (const k of keys) out[k] = merge(items.map((i) => (i as Record<string, unknown> | undefined)?.[k]));
    return out;
  };
  const f = merge([...list]) as Figures;
  f.lost = list.reduce((a, x) => a + x.lost, 0);
  f.duplicates = list.reduce((a, x) => a + x.duplicates, 0);
  return f;
}

interface SystemFigures {
  def: SystemDef;
  f: Figures;
  runs: number;
}

/** One entry per system, in the order systems first ran, with the median of its runs. */
export function bySystem(results: readonly SystemResult[], fanouts: readonly number[]): SystemFigures[] {
  const groups = new Map<string, SystemResult[]>();
  for (const r of results) {
    const g = groups.get(r.def.id) ?? [];
    g.push(r);
    groups.set(r.def.id, g);
  }
  return [...groups.values()].map((runs) => ({
    def: runs[0]!.def,
    f: medianFigures(runs.map((r) => figures(r, fanouts))),
    runs: runs.length,
  }));
}

function fmt(v: number | undefined, digits = 1): string {
  if (v === undefined || !Number.isFinite(v)) return '–';
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(digits);
}

function fmtRatio(v: number | undefined): string {
  return v === undefined ? '–' : `${v.toFixed(2)}×`;
}

interface Row {
  label: string;
  get: (f: Figures) => number | undefined;
  digits?: number;
}

function rows(cfg: BenchConfig): Row[] {
  const out: Row[] = [];
  for (const n of cfg.fanouts) {
    const c = n.toLocaleString('en-US');
    out.push(
      { label: `Broadcast to ${c}: deliveries/s`, get: (f) => f.broadcast[n]?.perSecond },
      {
        label: `Broadcast to ${c}: server CPU µs per delivery`,
        get: (f) => f.broadcast[n]?.cpuPerDelivery,
        digits: 2,
      },
      {
        label: `Broadcast to ${c}: e2e p50 ms at ${cfg.broadcastRate}/s`,
        get: (f) => f.broadcast[n]?.p50,
        digits: 2,
      },
      {
        label: `Broadcast to ${c}: e2e p99 ms at ${cfg.broadcastRate}/s`,
        get: (f) => f.broadcast[n]?.p99,
        digits: 2,
      },
    );
  }
  const users = cfg.fanouts[0]!.toLocaleString('en-US');
  out.push(
    { label: `Targeted to ${users} users: requests/s`, get: (f) => f.targeted.perSecond },
    { label: 'Targeted: server CPU µs per request', get: (f) => f.targeted.cpuPerRequest },
    { label: `Targeted: e2e p50 ms at ${cfg.targetedRate}/s`, get: (f) => f.targeted.p50, digits: 2 },
    { label: `Targeted: e2e p99 ms at ${cfg.targetedRate}/s`, get: (f) => f.targeted.p99, digits: 2 },
    { label: `Batch (${cfg.batchSize} per request): messages/s`, get: (f) => f.batch.perSecond },
    { label: 'Batch: server CPU µs per message', get: (f) => f.batch.cpuPerMessage },
    { label: 'Idle memory per connection, KiB (RSS)', get: (f) => f.memoryKiB },
    { label: 'Idle memory per connection, KiB (JS heap + external)', get: (f) => f.heapKiB },
    { label: 'Lost (all phases)', get: (f) => f.lost, digits: 0 },
    { label: 'Duplicated (all phases)', get: (f) => f.duplicates, digits: 0 },
  );
  return out;
}

/** The main table: every system's figures and each system's ratio to the baseline, from the same run. */
export function renderTable(cfg: BenchConfig, results: readonly SystemResult[]): string {
  const systems = bySystem(results, cfg.fanouts);
  const baseF = systems.find((x) => x.def.id === BASELINE)?.f;
  const head = ['metric'];
  for (const x of systems) {
    head.push(x.def.label);
    if (baseF && x.def.id !== BASELINE) head.push('÷ baseline');
  }
  const lines = [
    `| ${head.join(' | ')} |`,
    `| ${head.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
  ];
  for (const row of rows(cfg)) {
    const cells = [row.label];
    for (const { def, f } of systems) {
      cells.push(fmt(row.get(f), row.digits));
      if (baseF && def.id !== BASELINE) {
        const counts = row.label.startsWith('Lost') || row.label.startsWith('Duplicated');
        cells.push(counts ? '' : fmtRatio(ratio(row.get(f), row.get(baseF))));
      }
    }
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

interface Target {
  what: string;
  value: (f: Figures) => number | undefined;
  limit: number;
}

/** The issue's targets, as ratios to the baseline in the same run. */
export function renderTargets(cfg: BenchConfig, results: readonly SystemResult[]): string {
  const systems = bySystem(results, cfg.fanouts);
  const b = systems.find((x) => x.def.id === BASELINE)?.f;
  if (!b) return '_No baseline in this run: no ratios._';
  const targets: Target[] = [];
  for (const n of cfg.fanouts) {
    targets.push({
      what: `CPU per broadcast delivery (${n.toLocaleString('en-US')} subscribers)`,
      value: (f) => ratio(f.broadcast[n]?.cpuPerDelivery, b.broadcast[n]?.cpuPerDelivery),
      limit: 1.0,
    });
  }
  targets.push({
    what: 'CPU per targeted publish',
    value: (f) => ratio(f.targeted.cpuPerRequest, b.targeted.cpuPerRequest),
    limit: 1.0,
  });
  for (const n of cfg.fanouts) {
    targets.push({
      what: `p99 e2e latency, broadcast to ${n.toLocaleString('en-US')} at ${cfg.broadcastRate}/s`,
      value: (f) => ratio(f.broadcast[n]?.p99, b.broadcast[n]?.p99),
      limit: 1.2,
    });
  }
  targets.push(
    {
      what: `p99 e2e latency, targeted at ${cfg.targetedRate}/s`,
      value: (f) => ratio(f.targeted.p99, b.targeted.p99),
      limit: 1.2,
    },
    {
      what: 'Memory per idle connection (RSS)',
      value: (f) => ratio(f.memoryKiB, b.memoryKiB),
      limit: 1.0,
    },
    {
      what: 'Memory per idle connection (JS heap + external; less noisy than RSS)',
      value: (f) => ratio(f.heapKiB, b.heapKiB),
      limit: 1.0,
    },
  );
  const relays = systems.filter((x) => x.def.kind === 'pushrelay');
  const head = ['target (ratio to the baseline)', 'limit', ...relays.map((r) => r.def.label)];
  const lines = [`| ${head.join(' | ')} |`, `| --- | ---: | ${relays.map(() => '---:').join(' | ')} |`];
  const verdict = (v: number | undefined, limit: number) =>
    v === undefined ? '–' : `${v.toFixed(2)}× ${v <= limit ? 'met' : '**not met**'}`;
  for (const t of targets) {
    lines.push(
      `| ${t.what} | ≤ ${t.limit.toFixed(1)} | ${relays.map((r) => verdict(t.value(r.f), t.limit)).join(' | ')} |`,
    );
  }
  lines.push(
    `| Lost messages | 0 | ${relays
      .map((r) => {
        const lost = r.f.lost;
        return `${lost} ${lost === 0 ? 'met' : '**not met**'}`;
      })
      .join(' | ')} |`,
  );
  return lines.join('\n');
}

/** Each relay system's peer: plain Socket.IO in the same mode. */
export const PEERS: Record<string, string> = {
  pushrelay: 'socketio',
  'pushrelay-cluster': 'socketio-cluster',
};

interface IssueTarget {
  what: string;
  limit: number;
  /** The ratio in one pass, from that pass's figures of the relay and its peer. */
  value: (f: Figures, peer: Figures) => number | undefined;
  note?: string;
}

/**
 * Issue 15's targets, each a ratio computed inside every pass (the relay and
 * its peer measured in the same pass), then the median of the passes, marked
 * met or not met.
 */
export function renderIssueTargets(
  cfg: BenchConfig,
  results: readonly SystemResult[],
  paired: readonly PairedResult[] = [],
): string {
  const passes = [...new Set(results.map((r) => r.run))].sort((a, b) => a - b);
  const find = (id: string, run: number) => results.find((r) => r.def.id === id && r.run === run && !r.error);
  const relays = Object.keys(PEERS).filter((id) => results.some((r) => r.def.id === id));
  if (relays.length === 0) return '_No pushrelay system in this run._';
  const targets = (id: string): IssueTarget[] => {
    const standalone = id === 'pushrelay';
    const list: IssueTarget[] = [
      {
        what: 'CPU per targeted publish ÷ peer',
        limit: standalone ? 1.5 : 1.0,
        value: (f, p) => ratio(f.targeted.cpuPerRequest, p.targeted.cpuPerRequest),
        note: standalone ? 'goal beyond it: ≤ 1.0' : undefined,
      },
      {
        what: `CPU per batch message (${cfg.batchSize} per request) ÷ its own targeted publish`,
        limit: 0.5,
        value: (f) => ratio(f.batch.cpuPerMessage, f.targeted.cpuPerRequest),
      },
      {
        what: `e2e p99, targeted at ${cfg.targetedRate}/s ÷ peer`,
        limit: 1.2,
        value: (f, p) => ratio(f.targeted.p99, p.targeted.p99),
        note: 'sequential: each system in its own minutes of the pass',
      },
    ];
    for (const n of cfg.fanouts) {
      list.push({
        what: `broadcast CPU per delivery (${n.toLocaleString('en-US')}) ÷ peer`,
        limit: 1.0,
        value: (f, p) => ratio(f.broadcast[n]?.cpuPerDelivery, p.broadcast[n]?.cpuPerDelivery),
      });
    }
    list.push(
      {
        what: 'idle memory per connection (JS heap + external) ÷ peer',
        limit: 1.0,
        value: (f, p) => ratio(f.heapKiB, p.heapKiB),
      },
      {
        what: 'idle memory per connection (RSS) ÷ peer',
        limit: 1.0,
        value: (f, p) => ratio(f.memoryKiB, p.memoryKiB),
      },
    );
    return list;
  };
  const head = ['system', 'target', 'limit', ...passes.map((p) => `pass ${p}`), 'median', 'verdict'];
  const lines = [
    `| ${head.join(' | ')} |`,
    `| --- | --- | ---: | ${[...passes, 0, 0].map(() => '---:').join(' | ')} |`,
  ];
  /** One target's row: the ratio of every pass, their median, and the verdict. */
  const row = (label: string, what: string, limit: number, values: (number | undefined)[]) => {
    const m = median(values);
    const verdict = m === undefined ? '–' : m <= limit ? 'met' : '**not met**';
    return `| ${label} | ${what} | ≤ ${limit.toFixed(1)} | ${values.map(fmtRatio).join(' | ')} | ${fmtRatio(m)} | ${verdict} |`;
  };
  for (const id of relays) {
    const label = results.find((r) => r.def.id === id)!.def.label;
    for (const t of targets(id)) {
      const values = passes.map((run) => {
        const r = find(id, run);
        const p = find(PEERS[id]!, run);
        return r && p ? t.value(figures(r, cfg.fanouts), figures(p, cfg.fanouts)) : undefined;
      });
      lines.push(row(label, `${t.what}${t.note ? ` (${t.note})` : ''}`, t.limit, values));
    }
    const mine = paired.filter((p) => p.relay === id && !p.error);
    if (mine.length > 0) {
      const values = passes.map((run) => {
        const p = mine.find((x) => x.run === run);
        return ratio(p?.relayPhase?.latency.p99, p?.peerPhase?.latency.p99);
      });
      const what = `e2e p99, targeted at ${cfg.targetedRate}/s ÷ peer (paired: both up at once, taking turns in ${cfg.pairedSegmentMs / 1000} s segments)`;
      lines.push(row(label, what, 1.2, values));
    }
    const runs = results.filter((r) => r.def.id === id).map((r) => figures(r, cfg.fanouts));
    const lost =
      runs.reduce((a, f) => a + f.lost, 0) + mine.reduce((a, p) => a + (p.relayPhase?.lost ?? 0), 0);
    const dup =
      runs.reduce((a, f) => a + f.duplicates, 0) +
      mine.reduce((a, p) => a + (p.relayPhase?.duplicates ?? 0), 0);
    lines.push(
      `| ${label} | lost / duplicated messages, all passes | 0 | ${passes.map(() => '').join(' | ')} | ${lost} / ${dup} | ${lost === 0 && dup === 0 ? 'met' : '**not met**'} |`,
    );
  }
  return lines.join('\n');
}

function renderPaired(paired: readonly PairedResult[]): string {
  if (paired.length === 0) return '';
  const lines = [
    '',
    'Paired latency phase (both systems up at once, taking turns at the fixed rate):',
    '',
    '| system | peer | run | segments | side | requests | delivered / expected | lost | dup | p50 ms | p90 ms | p99 ms | max ms |',
    `|${' --- |'.repeat(13)}`,
  ];
  for (const p of paired) {
    for (const [side, phase] of [
      [p.relay, p.relayPhase],
      [p.peer, p.peerPhase],
    ] as const) {
      if (!phase) continue;
      const l = phase.latency;
      lines.push(
        `| ${p.relay} | ${p.peer} | ${p.run} | ${p.segments} | ${side} | ${phase.requests} | ${phase.delivered} / ${phase.expected} | ${phase.lost} | ${phase.duplicates} | ${fmt(l.p50, 2)} | ${fmt(l.p90, 2)} | ${fmt(l.p99, 2)} | ${fmt(l.max, 1)} |`,
      );
    }
  }
  const errors = paired
    .filter((p) => p.error)
    .map((p) => `- paired ${p.relay} / ${p.peer} failed: ${p.error}`);
  return [...lines, ...(errors.length ? ['', ...errors] : [])].join('\n');
}

function renderDetails(results: readonly SystemResult[]): string {
  const head =
    '| system | run | phase | requests | messages | delivered / expected | lost | dup | elapsed s | CPU nodes s | CPU Redis s | CPU load gen s | p50 ms | p99 ms | max ms |';
  const lines = [head, `|${' --- |'.repeat(15)}`];
  for (const r of results) {
    for (const [name, m] of Object.entries(r.phases)) {
      const p = m.phase;
      lines.push(
        `| ${r.def.id} | ${r.run} | ${name} | ${p.requests} | ${p.messages} | ${p.delivered} / ${p.expected} | ${p.lost} | ${p.duplicates} | ${(p.elapsedMs / 1000).toFixed(1)} | ${m.cpu.servers.toFixed(2)} | ${m.cpu.redis.toFixed(2)} | ${m.cpu.load.toFixed(2)} | ${fmt(p.latency.p50, 2)} | ${fmt(p.latency.p99, 2)} | ${fmt(p.latency.max, 1)} |`,
      );
    }
  }
  const mem = [
    '',
    '| system | run | connections added | RSS per connection KiB | heap+external per connection KiB | Redis per connection KiB | RSS total MiB |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of results) {
    const m = r.memory;
    if (!m) continue;
    mem.push(
      `| ${r.def.id} | ${r.run} | ${m.connections} | ${fmt(m.rssPerConnection / 1024)} | ${fmt(m.heapPerConnection / 1024)} | ${m.redisPerConnection === undefined ? '–' : fmt(m.redisPerConnection / 1024, 2)} | ${fmt(m.rssTotal / 2 ** 20)} |`,
    );
  }
  const errors = results.filter((r) => r.error).map((r) => `- ${r.def.id} failed: ${r.error}`);
  return [...lines, ...mem, ...(errors.length ? ['', ...errors] : [])].join('\n');
}

export function renderResults(
  meta: RunMeta,
  cfg: BenchConfig,
  results: readonly SystemResult[],
  paired: readonly PairedResult[] = [],
): string {
  const load = (l: number[]) => l.map((x) => x.toFixed(2)).join(' / ');
  return `# Benchmark results

Written by \`npm run bench\` (bench/run.ts); do not edit by hand. Analysis,
profiles and the gaps that remain: [PROFILE.md](PROFILE.md).

- When: ${meta.started}, ${Math.round(meta.durationS)} s for the whole run, commit ${meta.commit}
- Machine: ${meta.cores} × ${meta.cpu}, ${meta.memoryGiB.toFixed(0)} GiB; Node ${meta.node}; ${meta.redis}
- Load average (1/5/15 min) before: ${load(meta.loadBefore)}, after: ${load(meta.loadAfter)}.
  The load generator shares these cores with the servers, and other work on the
  machine adds noise: compare systems through the CPU each spends per unit of
  work (read from /proc/<pid>/stat of the server processes, plus redis-server
  where the system uses it), not through rates.
- Sizes: fan-out to ${cfg.fanouts.join(' and ')} subscribers; ${cfg.durationMs / 1000} s per phase
  (the fixed-rate targeted phase ${cfg.targetedRateDurationMs / 1000} s, ${Math.round((cfg.targetedRate * cfg.targetedRateDurationMs) / 1000)} samples, as its p99 is a target);
  the whole sequence ran ${cfg.repeat} time(s), every other time in reverse order, and each figure
  below is the median of the runs (lost and duplicated are totals);
  fixed rates ${cfg.broadcastRate} broadcasts/s and ${cfg.targetedRate} targeted publishes/s for latency;
  saturated phases with ${cfg.broadcastConcurrency} (broadcast) and ${cfg.targetedConcurrency} (targeted) requests in flight,
  batches of ${cfg.batchSize} with ${cfg.batchConcurrency} in flight; ${cfg.paddingBytes} bytes of padding per message.
- pushrelay runs as in production: JWT auth per socket, publisher key per
  request, rate limiter on (limit set out of reach), presence, history
  (100 per channel), metrics; the cluster adds Redis for all of them, with
  clients split across the two nodes and every publish sent to the first.
  The baseline (bench/baseline.ts) is plain Socket.IO on node:http: no auth,
  presence, history or Redis.

## Summary

${renderTable(cfg, results)}

Deliveries/s and requests/s come from the saturated phases, CPU per unit too
(server CPU ÷ messages delivered or accepted); latencies from the fixed-rate
phases, measured by the load generator from the send time each message carries.
Memory: growth of server RSS (after two forced GCs) from ${cfg.fanouts[0]} to ${cfg.fanouts[cfg.fanouts.length - 1]} idle
connections, divided by the connections added (both nodes summed for clusters).

## Issue 15 targets (ratio to the peer of each mode, per pass)

${renderIssueTargets(cfg, results, paired)}

The peer of pushrelay standalone is plain Socket.IO on one node; the peer of
pushrelay on 2 nodes + Redis is plain Socket.IO on 2 nodes with
\`@socket.io/redis-adapter\` (Redis CPU counted in both). Per-node cost from 1
to 4 nodes is measured by \`npm run bench:scale\` (below, when it ran).

The targeted p99 is measured twice. *Sequential*: each system's own
fixed-rate phase, minutes apart from its peer's. *Paired*: after the pass,
the relay and its peer are started together, each with its own load
generator and ${cfg.fanouts[0]} clients, and take turns at ${cfg.targetedRate}/s in ${cfg.pairedSegmentMs / 1000} s
segments (ABBA order) until each has run ${cfg.targetedRateDurationMs / 1000} s; the p99 is over
all of a side's samples. The machine's speed drifts by the minute (see the
load generator's CPU for the same phase in the table at the end), so the
paired ratio compares the two systems on the same machine state.

## Targets (ratio to the single-node baseline)

${renderTargets(cfg, results)}

## Every phase

${renderDetails(results)}
${renderPaired(paired)}
`;
}
