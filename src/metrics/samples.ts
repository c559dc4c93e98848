import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Redis } from '../redis/client.js';
import { counterTotal, type Metrics } from './index.js';

// What the console charts: each node samples its own rates every
// PUSHRELAY_STATS_INTERVAL_SECONDS and keeps the last 15 minutes of them (in
// Redis in a cluster, so any node can answer for all). Rates are computed
// here from counter deltas, so the page never parses /metrics.

/** How far back samples are kept, in milliseconds. */
export const STATS_WINDOW_MS = 15 * 60_000;

/** The package version, read once (this module runs from src/metrics or dist/metrics). */
export const VERSION: string = (() => {
  try {
    return (
      JSON.parse(readFileSync(resolve(import.meta.dirname, '../../package.json'), 'utf8')) as {
        version: string;
      }
    ).version;
  } catch {
    return 'unknown';
  }
})();

/** One node's rates over the interval ending at `ts`. Rates are per second; latencies in milliseconds. */
export interface Sample {
  /** Milliseconds since the epoch. */
  ts: number;
  /** Sockets connected now. */
  connections: number;
  /** Accepted publishes per second, by source (http, batch, stream, redis, socket, ...). */
  publishes: Record<string, number>;
  /** Messages written to sockets per second. */
  deliveries: number;
  /** Publish latency quantiles over the interval; null when nothing was published. */
  latency_p50_ms: number | null;
  latency_p99_ms: number | null;
  /** Requests refused by a rate limit, per second (all scopes). */
  rate_limited: number;
  /** Age of the oldest entry this node's ingest stream workers last read, in seconds; null when it reads none. */
  ingest_lag_s: number | null;
  /** Ingest stream entries not yet handled by this node's workers. */
  ingest_pending: number;
  /** Webhook deliveries waiting or retrying; null when webhooks are not configured. */
  webhook_queue: number | null;
  draining: boolean;
  version: string;
}

export interface SamplerDeps {
  readonly metrics: Metrics;
  readonly intervalMs: number;
  readonly nodeId: string;
  readonly sockets: () => number;
  readonly draining: () => boolean;
  readonly webhookQueue?: (() => Promise<number>) | undefined;
  /** Cluster: samples also go to this node's list in Redis. */
  readonly redis?: { readonly command: Redis; readonly key: string } | undefined;
  readonly log: Logger;
}

interface Totals {
  at: number;
  publishes: Map<string, number>;
  deliveries: number;
  rateLimited: number;
  /** Cumulative count per bucket bound (seconds), +Inf last. */
  buckets: [number, number][];
}

/** The q-quantile of the observations between two cumulative histogram readings, interpolated in its bucket. */
export function quantile(before: [number, number][], after: [number, number][], q: number): number | null {
  const counts = after.map(([le, n], i) => [le, n - (before[i]?.[1] ?? 0)] as [number, number]);
  const total = counts[counts.length - 1]?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [le, n] of counts) {
    if (n >= rank) {
      // Past the last finite bound only the bound itself is known.
      if (!Number.isFinite(le)) return lowerBound;
      const inBucket = n - lowerCount;
      return inBucket <= 0 ? le : lowerBound + ((le - lowerBound) * (rank - lowerCount)) / inBucket;
    }
    lowerBound = le;
    lowerCount = n;
  }
  return lowerBound;
}

const round = (n: number, digits = 3) => Math.round(n * 10 ** digits) / 10 ** digits;

export class Sampler {
  private readonly ring: Sample[] = [];
  private readonly keep: number;
  private previous: Totals | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly deps: SamplerDeps) {
    this.keep = Math.ceil(STATS_WINDOW_MS / deps.intervalMs);
  }

  start(): void {
    void this.totals().then((t) => {
      this.previous ??= t;
    });
    this.timer = setInterval(() => void this.tick(), this.deps.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** This node's samples newer than `since`, oldest first. */
  local(since = 0): Sample[] {
    return this.ring.filter((s) => s.ts > since);
  }

  /** Takes one sample now (the timer calls it; tests may too). */
  async tick(): Promise<Sample | undefined> {
    const { metrics, redis, log } = this.deps;
    try {
      const now = await this.totals();
      const before = this.previous;
      this.previous = now;
      if (before === undefined) return undefined;
      const seconds = Math.max(0.001, (now.at - before.at) / 1000);
      const rate = (a: number, b: number) => round(Math.max(0, a - b) / seconds);
      const publishes: Record<string, number> = {};
      for (const [source, n] of now.publishes) {
        publishes[source] = rate(n, before.publishes.get(source) ?? 0);
      }
      const p50 = quantile(before.buckets, now.buckets, 0.5);
      const p99 = quantile(before.buckets, now.buckets, 0.99);
      let lag: number | null = null;
      for (const v of (await metrics.ingestStreamLag.get()).values) lag = Math.max(lag ?? 0, v.value);
      let pending = 0;
      for (const v of (await metrics.ingestStreamPending.get()).values) pending += v.value;
      const sample: Sample = {
        ts: now.at,
        connections: this.deps.sockets(),
        publishes,
        deliveries: rate(now.deliveries, before.deliveries),
        latency_p50_ms: p50 === null ? null : round(p50 * 1000),
        latency_p99_ms: p99 === null ? null : round(p99 * 1000),
        rate_limited: rate(now.rateLimited, before.rateLimited),
        ingest_lag_s: lag === null ? null : round(lag),
        ingest_pending: pending,
        webhook_queue: this.deps.webhookQueue ? await this.deps.webhookQueue().catch(() => null) : null,
        draining: this.deps.draining(),
        version: VERSION,
      };
      if (redis) {
        try {
          await redis.command
            .multi()
            .lpush(redis.key, JSON.stringify(sample))
            .ltrim(redis.key, 0, this.keep - 1)
            // A node that is gone takes its samples with it once the window has passed.
            .pexpire(redis.key, STATS_WINDOW_MS)
            .exec();
        } catch (err) {
          // The other nodes miss this sample (a gap in their chart); this node still shows it.
          log.debug({ err: (err as Error).message }, 'console sample not stored in Redis');
        }
      }
      // Kept locally once Redis has it: the node's own view never shows a sample the others cannot read yet.
      this.ring.push(sample);
      if (this.ring.length > this.keep) this.ring.splice(0, this.ring.length - this.keep);
      return sample;
    } catch (err) {
      // A sample missed while Redis is away is a gap in the chart, nothing more.
      log.debug({ err: (err as Error).message }, 'console sample not stored');
      return undefined;
    }
  }

  private async totals(): Promise<Totals> {
    const { metrics } = this.deps;
    const publishes = new Map<string, number>();
    for (const v of (await metrics.publishes.get()).values) {
      if (v.labels.outcome !== 'ok') continue;
      const source = String(v.labels.source);
      publishes.set(source, (publishes.get(source) ?? 0) + v.value);
    }
    const deliveries = await counterTotal(metrics.deliveries);
    const rateLimited = await counterTotal(metrics.rateLimited);
    // Summed over sources, bucket by bucket.
    const byBound = new Map<number, number>();
    for (const v of (await metrics.publishDuration.get()).values) {
      if (v.metricName !== 'pushrelay_publish_duration_seconds_bucket') continue;
      const bound = (v.labels as Record<string, string | number | undefined>).le;
      const le = bound === '+Inf' ? Number.POSITIVE_INFINITY : Number(bound);
      byBound.set(le, (byBound.get(le) ?? 0) + v.value);
    }
    const buckets = [...byBound.entries()].sort((a, b) => a[0] - b[0]);
    return { at: Date.now(), publishes, deliveries, rateLimited, buckets };
  }
}
