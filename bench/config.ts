// Every size of a benchmark run, from BENCH_* environment variables, so a
// quick check and a full run differ only in the environment.

export type SystemId = 'socketio' | 'pushrelay' | 'pushrelay-cluster' | 'socketio-cluster';

export interface SystemDef {
  readonly id: SystemId;
  readonly label: string;
  readonly kind: 'pushrelay' | 'socketio';
  readonly nodes: 1 | 2;
  /** Uses the Redis server (its CPU and memory count as the system's). */
  readonly redis: boolean;
}

export const SYSTEMS: Record<SystemId, SystemDef> = {
  socketio: { id: 'socketio', label: 'Socket.IO (baseline)', kind: 'socketio', nodes: 1, redis: false },
  pushrelay: { id: 'pushrelay', label: 'pushrelay standalone', kind: 'pushrelay', nodes: 1, redis: false },
  'pushrelay-cluster': {
    id: 'pushrelay-cluster',
    label: 'pushrelay, 2 nodes + Redis',
    kind: 'pushrelay',
    nodes: 2,
    redis: true,
  },
  'socketio-cluster': {
    id: 'socketio-cluster',
    label: 'Socket.IO, 2 nodes + redis-adapter',
    kind: 'socketio',
    nodes: 2,
    redis: true,
  },
};

export interface BenchConfig {
  systems: SystemDef[];
  /** Times the whole sequence of systems runs (every other time in reverse order); figures are medians. */
  repeat: number;
  /** Subscriber counts for the broadcast phases; the smallest also serves the targeted and batch phases. */
  fanouts: number[];
  durationMs: number;
  /**
   * Length of the fixed-rate targeted phase, whose p99 is an issue target: at 200/s a 6 s phase
   * has 1,200 samples and its p99 is the 12th slowest, which one GC pause or descheduling moves.
   */
  targetedRateDurationMs: number;
  /**
   * One segment of the paired latency phase: a relay and its peer are up at once and take turns
   * at the fixed targeted rate, segment by segment, until each has run targetedRateDurationMs.
   */
  pairedSegmentMs: number;
  /** Fixed rates of the latency phases: broadcasts per second, targeted publishes per second. */
  broadcastRate: number;
  targetedRate: number;
  broadcastConcurrency: number;
  /** Broadcasts sent but not yet delivered to every client, at most, in the saturated phase. */
  broadcastWindow: number;
  targetedConcurrency: number;
  targetedWindow: number;
  batchSize: number;
  batchConcurrency: number;
  paddingBytes: number;
  drainMs: number;
  connectBatch: number;
  /** Only these phases run (all when empty): broadcast, targeted, batch, memory, paired. */
  phases: Set<string>;
  /** Where CPU profiles of the pushrelay nodes go, one per node and phase; none when undefined. */
  profileDir: string | undefined;
  profileIntervalUs: number;
  /** Where `perf record` files of every server go, one per node and phase; none when undefined. */
  perfDir: string | undefined;
  /** Where heap snapshots of the first node go, at both connection counts; none when undefined. */
  heapDir: string | undefined;
  out: string;
}

function num(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, not "${raw}"`);
  return n;
}

export function loadBenchConfig(env: NodeJS.ProcessEnv = process.env): BenchConfig {
  const ids = (env.BENCH_SYSTEMS ?? 'socketio,pushrelay,pushrelay-cluster,socketio-cluster')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const systems = ids.map((id) => {
    const def = SYSTEMS[id as SystemId];
    if (!def) throw new Error(`BENCH_SYSTEMS: unknown system "${id}" (${Object.keys(SYSTEMS).join(', ')})`);
    return def;
  });
  const fanouts = (env.BENCH_FANOUTS ?? '1000,2000')
    .split(',')
    .map((s) => Number(s.trim()))
    .filter((n) => Number.isInteger(n) && n > 0)
    .sort((a, b) => a - b);
  if (fanouts.length === 0) throw new Error('BENCH_FANOUTS: give one or more subscriber counts');
  return {
    systems,
    repeat: Math.max(1, Math.floor(num(env, 'BENCH_REPEAT', 2))),
    fanouts,
    durationMs: num(env, 'BENCH_DURATION_MS', 6000),
    targetedRateDurationMs: num(env, 'BENCH_TARGETED_RATE_DURATION_MS', 20000),
    pairedSegmentMs: Math.max(500, num(env, 'BENCH_PAIRED_SEGMENT_MS', 2000)),
    broadcastRate: num(env, 'BENCH_BROADCAST_RATE', 4),
    targetedRate: num(env, 'BENCH_TARGETED_RATE', 200),
    broadcastConcurrency: num(env, 'BENCH_BROADCAST_CONCURRENCY', 4),
    broadcastWindow: num(env, 'BENCH_BROADCAST_WINDOW', 8),
    targetedConcurrency: num(env, 'BENCH_TARGETED_CONCURRENCY', 16),
    targetedWindow: num(env, 'BENCH_TARGETED_WINDOW', 1000),
    batchSize: num(env, 'BENCH_BATCH_SIZE', 100),
    batchConcurrency: num(env, 'BENCH_BATCH_CONCURRENCY', 2),
    paddingBytes: num(env, 'BENCH_PAYLOAD_BYTES', 64),
    drainMs: num(env, 'BENCH_DRAIN_MS', 3000),
    connectBatch: num(env, 'BENCH_CONNECT_BATCH', 50),
    phases: new Set(
      (env.BENCH_PHASES ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
    profileDir: env.BENCH_PROFILE || undefined,
    profileIntervalUs: num(env, 'BENCH_PROFILE_INTERVAL_US', 200),
    perfDir: env.BENCH_PERF || undefined,
    heapDir: env.BENCH_HEAP || undefined,
    out: env.BENCH_OUT ?? 'bench/RESULTS.md',
  };
}
