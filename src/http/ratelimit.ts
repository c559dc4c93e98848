import type { FastifyRateLimitStoreCtor } from '@fastify/rate-limit';
import type { Redis } from '../redis/client.js';

// A store for @fastify/rate-limit that keeps the limit cluster-wide without a
// Redis round trip per request: a node takes its quota from the shared
// counter of the window in slices (INCRBY <slice>) and hands them out
// locally. The count in Redis is what every node took; a node holds back at
// most one slice it has not used yet, so the cluster admits at most the limit
// per window (slightly fewer when nodes hold unused slice ends as it closes).

/** Requests per slice: a hundredth of the limit, so N nodes hold back at most N% of it; 1 to 1,000. */
export function sliceSize(max: number): number {
  return Math.max(1, Math.min(1000, Math.floor(max / 100)));
}

interface Quota {
  /** When the window ends (ms), as Redis said at this node's first slice; 0 until then. */
  resetAt: number;
  /** Taken from Redis in this window by this node, and handed out. */
  granted: number;
  used: number;
  /** What Redis said every node had taken, at this node's last slice. */
  taken: number;
  /** Whether the shared counter is past the limit (no slice left to take). */
  exhausted: boolean;
  /** A slice being taken; requests that find the local quota empty wait for it. */
  taking: Promise<void> | undefined;
}

type Callback = (err: Error | null, res: { current: number; ttl: number } | null) => void;

/** The commands the store needs; a plain ioredis client or cluster. */
interface TakeCommands {
  relayRateTake(key: string, slice: number, windowMs: number): Promise<[number, number]>;
}

// INCRBY, and the window's expiry on its first slice (the window starts with
// the first request, as @fastify/rate-limit's own Redis store does).
// KEYS: counter. ARGV: slice, window ms. Returns { taken, ms left }.
const TAKE_LUA = `
local n = redis.call('incrby', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('pexpire', KEYS[1], ARGV[2]) end
local ttl = redis.call('pttl', KEYS[1])
if ttl < 0 then
  redis.call('pexpire', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return { n, ttl }
`;

/** One request counted against a key: `current` as @fastify/rate-limit reads it (over `max`: refused). */
export type RateCallback = Callback;

/** A route's limiter, shared by the Fastify plugin and the publish fast path. */
export interface RouteLimiter {
  incr(key: string, cb: Callback, timeWindow: number, max: number): void;
  /**
   * incr's answer when it needs nothing to wait for (this node holds quota
   * for the key's window, or knows the limit is reached); undefined, having
   * counted nothing, when incr would have to take a slice first.
   */
  incrNow?(key: string, max: number): { current: number; ttl: number } | undefined;
}

export interface RateStores {
  /** What @fastify/rate-limit constructs; each route's child is the shared limiter of that route. */
  readonly ctor: FastifyRateLimitStoreCtor;
  forRoute(method: string, url: string): RouteLimiter;
}

/**
 * Quotas per key in memory, taken in slices from a shared counter per window:
 * Redis in a cluster (once per slice), this process when standalone.
 */
export function rateStores(redis: Redis | undefined, nameSpace: string): RateStores {
  if (redis && !(redis as unknown as Partial<TakeCommands>).relayRateTake) {
    redis.defineCommand('relayRateTake', { numberOfKeys: 1, lua: TAKE_LUA });
  }
  const counters = new Map<string, { n: number; resetAt: number }>();
  const incrby = async (key: string, slice: number, windowMs: number): Promise<[number, number]> => {
    if (redis) return (redis as unknown as TakeCommands).relayRateTake(key, slice, windowMs);
    const now = Date.now();
    let c = counters.get(key);
    if (c === undefined || now >= c.resetAt) {
      if (counters.size >= 10_000) for (const [k, v] of counters) if (now >= v.resetAt) counters.delete(k);
      c = { n: 0, resetAt: now + windowMs };
      counters.set(key, c);
    }
    c.n += slice;
    return [c.n, c.resetAt - now];
  };

  class SlicedStore implements RouteLimiter {
    private readonly quotas = new Map<string, Quota>();

    /** The plugin constructs it with its options (unused); a route's child gets its own key prefix. */
    constructor(_options?: unknown, prefix?: string) {
      this.prefix = prefix ?? nameSpace;
    }

    private readonly prefix: string;

    incr(key: string, cb: Callback, timeWindow: number, max: number): void {
      const now = Date.now();
      let q = this.quotas.get(key);
      if (q === undefined || (q.resetAt > 0 && now >= q.resetAt && !q.taking)) {
        if (q === undefined && this.quotas.size >= 10_000) this.sweep(now);
        q = { resetAt: 0, granted: 0, used: 0, taken: 0, exhausted: false, taking: undefined };
        this.quotas.set(key, q);
      }
      const quota = q;
      const answer = (): void => {
        const at = Date.now();
        if (quota.resetAt > 0 && at >= quota.resetAt) {
          // The window ended while waiting: count this request in the next one.
          this.incr(key, cb, timeWindow, max);
          return;
        }
        const ttl = Math.max(0, quota.resetAt - at);
        if (quota.used < quota.granted) {
          quota.used++;
          cb(null, { current: Math.min(max, quota.taken - (quota.granted - quota.used)), ttl });
        } else if (quota.exhausted) {
          cb(null, { current: max + 1, ttl });
        } else {
          this.take(key, quota, timeWindow, max).then(answer, (err: Error) => cb(err, null));
        }
      };
      if (quota.taking) quota.taking.then(answer, (err: Error) => cb(err, null));
      else answer();
    }

    incrNow(key: string, max: number): { current: number; ttl: number } | undefined {
      const quota = this.quotas.get(key);
      if (quota === undefined || quota.taking) return undefined;
      const now = Date.now();
      if (quota.resetAt > 0 && now >= quota.resetAt) return undefined;
      const ttl = Math.max(0, quota.resetAt - now);
      if (quota.used < quota.granted) {
        quota.used++;
        return { current: Math.min(max, quota.taken - (quota.granted - quota.used)), ttl };
      }
      return quota.exhausted ? { current: max + 1, ttl } : undefined;
    }

    child(routeOptions: { routeInfo: { method: string; url: string } }): RouteLimiter {
      return forRoute(routeOptions.routeInfo.method, routeOptions.routeInfo.url);
    }

    private take(key: string, quota: Quota, timeWindow: number, max: number): Promise<void> {
      quota.taking ??= (async () => {
        const slice = sliceSize(max);
        try {
          const [taken, ttl] = await incrby(`${this.prefix}${key}`, slice, timeWindow);
          if (quota.resetAt === 0) quota.resetAt = Date.now() + Number(ttl);
          const before = taken - slice;
          // Only what is under the limit is granted; the rest of the slice is nobody's.
          const grant = Math.max(0, Math.min(slice, max - before));
          quota.granted += grant;
          quota.taken = taken;
          if (grant < slice) quota.exhausted = true;
        } finally {
          quota.taking = undefined;
        }
      })();
      return quota.taking;
    }

    private sweep(now: number): void {
      for (const [k, q] of this.quotas)
        if (q.resetAt > 0 && now >= q.resetAt && !q.taking) this.quotas.delete(k);
    }
  }

  const routes = new Map<string, SlicedStore>();
  const forRoute = (method: string, url: string): RouteLimiter => {
    const prefix = `${nameSpace}${method}${url}-`;
    let store = routes.get(prefix);
    if (store === undefined) {
      store = new SlicedStore(undefined, prefix);
      routes.set(prefix, store);
    }
    return store;
  };
  return { ctor: SlicedStore as unknown as FastifyRateLimitStoreCtor, forRoute };
}
