import type { ChainableCommander } from 'ioredis';
import type { Logger } from 'pino';
import { RelayError } from '../errors.js';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import { type BatchItem, runBatch } from '../redis/slots.js';
import { type LocalMembership, NO_COUNTERS, type NodeInfo, type Presence } from './types.js';

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Presence in Redis. Per channel, a hash of members (`<node>/<socket>` ->
 * user) and a hash of per-node socket counts; per node, a heartbeat in a
 * sorted set. Readers ignore entries of nodes whose heartbeat is older than
 * the TTL, and a live node removes a dead node's entries, so a node killed
 * with SIGKILL stops counting within one TTL and leaves nothing behind.
 *
 * Writes from many sockets are coalesced into one pipeline per tick.
 */
export class RedisPresence implements Presence {
  /** Local socket count per channel; the source of the absolute counts written to Redis. */
  private readonly localCounts = new Map<string, number>();
  /** Queued member writes: [command, key, ...args]. */
  private queue: [string, string, ...(string | number)[]][] = [];
  private touched = new Set<string>();
  private waiters: Pending[] = [];
  private flushScheduled = false;
  private alive = new Set<string>();
  /** Set when a write or heartbeat failed: everything is written again on the next heartbeat. */
  private dirty = false;
  private readonly timer: NodeJS.Timeout;
  private readonly startedAt = Date.now();
  private cleaning = false;

  constructor(
    private readonly redis: Redis,
    private readonly names: RedisNames,
    private readonly nodeId: string,
    private readonly ttlSeconds: number,
    private readonly local: LocalMembership,
    private readonly log: Logger,
  ) {
    this.alive.add(nodeId);
    this.timer = setInterval(() => void this.heartbeat(), (ttlSeconds * 1000) / 3);
    this.timer.unref();
    // Register as soon as the connection is up, not one interval later. After
    // any interruption Redis may have come back empty (or cleaned this node up
    // as dead), so the whole membership is written again.
    redis.on('close', () => {
      this.dirty = true;
    });
    redis.on('ready', () => void this.heartbeat());
    if (redis.status === 'ready') void this.heartbeat();
  }

  join(channel: string, socketId: string, user: string): Promise<void> {
    this.localCounts.set(channel, (this.localCounts.get(channel) ?? 0) + 1);
    this.queue.push(['hset', this.names.members(channel), this.field(socketId), user]);
    return this.schedule(channel);
  }

  leave(channel: string, socketId: string): Promise<void> {
    const n = (this.localCounts.get(channel) ?? 1) - 1;
    if (n <= 0) this.localCounts.delete(channel);
    else this.localCounts.set(channel, n);
    this.queue.push(['hdel', this.names.members(channel), this.field(socketId)]);
    return this.schedule(channel);
  }

  async count(channels: readonly string[]): Promise<number[]> {
    if (channels.length === 0) return [];
    const batch = [this.aliveOp(), ...channels.map((c) => op(this.names.counts(c), (p, k) => p.hgetall(k)))];
    const [aliveIds, ...results] = await this.exec(batch);
    const alive = this.aliveFrom(aliveIds);
    return results.map((value) => {
      let total = 0;
      for (const [node, n] of Object.entries(value as Record<string, string>)) {
        if (alive.has(node)) total += Number(n);
      }
      return total;
    });
  }

  async members(channel: string): Promise<Map<string, number>> {
    const [aliveIds, all] = await this.exec([
      this.aliveOp(),
      op(this.names.members(channel), (p, k) => p.hgetall(k)),
    ]);
    const alive = this.aliveFrom(aliveIds);
    const out = new Map<string, number>();
    for (const [field, user] of Object.entries(all as Record<string, string>)) {
      const node = field.slice(0, field.indexOf('/'));
      if (alive.has(node)) out.set(user, (out.get(user) ?? 0) + 1);
    }
    return out;
  }

  /**
   * Liveness is read in the same round trip as the counts it filters, so a
   * node that started a moment ago counts at once and a dead one stops
   * counting as soon as its heartbeat is older than the TTL.
   */
  private aliveOp(): BatchItem {
    const since = Date.now() - this.ttlSeconds * 1000;
    return op(this.names.nodes, (p, k) => p.zrangebyscore(k, since, '+inf'));
  }

  private aliveFrom(ids: unknown): Set<string> {
    const alive = new Set(ids as string[]);
    alive.add(this.nodeId);
    this.alive = alive;
    return alive;
  }

  async nodes(): Promise<NodeInfo[]> {
    const ids = this.aliveFrom(
      await this.wrap(
        this.redis.zrangebyscore(this.names.nodes, Date.now() - this.ttlSeconds * 1000, '+inf'),
      ),
    );
    const list = [...ids];
    const results = await this.exec([
      ...list.map((id) => op(this.names.node(id), (p, k) => p.hgetall(k))),
      op(this.names.nodes, (p, k) => p.zmscore(k, ...list)),
    ]);
    const scores = results.pop() as (string | null)[];
    return list
      .map((id, i) => {
        const h = results[i] as Record<string, string>;
        return {
          id,
          sockets: Number(h.sockets ?? 0),
          users: Number(h.users ?? 0),
          startedAt: Number(h.startedAt ?? 0),
          lastSeen: Number(scores[i] ?? 0),
          connections: Number(h.connections ?? 0),
          publishes: Number(h.publishes ?? 0),
          deliveries: Number(h.deliveries ?? 0),
        };
      })
      .filter((n) => n.startedAt > 0);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
    // Leave at once rather than after a TTL: this node is going away on purpose.
    try {
      await runBatch(this.redis, [
        ...[...this.localCounts.keys()].map((c) =>
          op(this.names.counts(c), (p, k) => p.hdel(k, this.nodeId)),
        ),
        op(this.names.nodes, (p, k) => p.zrem(k, this.nodeId)),
        op(this.names.node(this.nodeId), (p, k) => p.del(k)),
      ]);
    } catch {
      // Redis is away: readers drop this node after the TTL anyway.
    }
  }

  private field(socketId: string): string {
    return `${this.nodeId}/${socketId}`;
  }

  private schedule(channel: string): Promise<void> {
    this.touched.add(channel);
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => void this.flush());
    }
    return done;
  }

  /** Writes queued member changes plus the resulting absolute count of every touched channel. */
  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const ops = this.queue;
    const touched = this.touched;
    const waiters = this.waiters;
    this.queue = [];
    this.touched = new Set();
    this.waiters = [];
    if (ops.length === 0 && touched.size === 0) return;
    const batch: BatchItem[] = ops.map(([command, key, ...args]) =>
      op(key, (p) => p.call(command, key, ...args)),
    );
    for (const channel of touched) this.writeCount(batch, channel);
    try {
      await this.exec(batch);
      for (const w of waiters) w.resolve();
    } catch (err) {
      this.dirty = true;
      for (const w of waiters) w.reject(err as Error);
    }
  }

  private writeCount(batch: BatchItem[], channel: string): void {
    const n = this.localCounts.get(channel) ?? 0;
    const counts = this.names.counts(channel);
    const mine = this.names.nodeChannels(this.nodeId);
    if (n > 0) {
      batch.push(op(counts, (p, k) => p.hset(k, this.nodeId, n)));
      batch.push(op(mine, (p, k) => p.sadd(k, channel)));
    } else {
      batch.push(op(counts, (p, k) => p.hdel(k, this.nodeId)));
      batch.push(op(mine, (p, k) => p.srem(k, channel)));
    }
  }

  private async heartbeat(): Promise<void> {
    const counters = (await this.local.counters?.().catch(() => undefined)) ?? NO_COUNTERS;
    const now = Date.now();
    const { sockets, users } = this.local.stats();
    const ttlMs = this.ttlSeconds * 1000;
    try {
      if (this.dirty) await this.reregister();
      const nodes = this.names.nodes;
      const node = this.names.node(this.nodeId);
      const results = await this.exec([
        op(nodes, (p, k) => p.zadd(k, now, this.nodeId)),
        op(node, (p, k) => p.hset(k, { sockets, users, startedAt: this.startedAt, ...counters })),
        op(node, (p, k) => p.expire(k, this.ttlSeconds * 3)),
        op(nodes, (p, k) => p.zrangebyscore(k, now - ttlMs, '+inf')),
        op(nodes, (p, k) => p.zrangebyscore(k, '-inf', now - 3 * ttlMs)),
      ]);
      this.alive = new Set([...(results[3] as string[]), this.nodeId]);
      const dead = (results[4] as string[]).filter((id) => id !== this.nodeId);
      if (dead.length > 0 && !this.cleaning) void this.cleanUp(dead);
    } catch {
      // A node that cannot reach Redis may have been cleaned up by the others: write it all again.
      this.dirty = true;
    }
  }

  /** Writes this node's whole membership again, replacing whatever Redis has for it. */
  private async reregister(): Promise<void> {
    const batch: BatchItem[] = [];
    const counts = new Map<string, number>();
    for (const [channel, socketId, user] of this.local.entries()) {
      const field = this.field(socketId);
      batch.push(op(this.names.members(channel), (p, k) => p.hset(k, field, user)));
      counts.set(channel, (counts.get(channel) ?? 0) + 1);
    }
    this.localCounts.clear();
    for (const [c, n] of counts) this.localCounts.set(c, n);
    // Same slot as the SADDs writeCount queues after it, so it runs before them on a Cluster too.
    batch.push(op(this.names.nodeChannels(this.nodeId), (p, k) => p.del(k)));
    for (const channel of counts.keys()) this.writeCount(batch, channel);
    await this.exec(batch);
    this.dirty = false;
    this.log.info({ channels: counts.size }, 'presence re-registered');
  }

  /** Removes what dead nodes left behind; one live node does it per dead node. */
  private async cleanUp(dead: string[]): Promise<void> {
    this.cleaning = true;
    try {
      for (const id of dead) {
        const lock = await this.redis.set(this.names.cleanup(id), this.nodeId, 'EX', 60, 'NX');
        if (lock !== 'OK') continue;
        let cursor = '0';
        do {
          const [next, channels] = await this.redis.sscan(this.names.nodeChannels(id), cursor, 'COUNT', 200);
          cursor = next;
          for (const channel of channels) await this.removeNodeFromChannel(id, channel);
        } while (cursor !== '0');
        await runBatch(this.redis, [
          op(this.names.nodeChannels(id), (p, k) => p.del(k)),
          op(this.names.node(id), (p, k) => p.del(k)),
          op(this.names.nodes, (p, k) => p.zrem(k, id)),
        ]);
        this.log.info({ node: id }, 'cleaned up presence of a dead node');
      }
    } catch (err) {
      this.log.debug({ err }, 'presence cleanup interrupted');
    } finally {
      this.cleaning = false;
    }
  }

  private async removeNodeFromChannel(node: string, channel: string): Promise<void> {
    const key = this.names.members(channel);
    let cursor = '0';
    do {
      const [next, flat] = await this.redis.hscan(key, cursor, 'MATCH', `${node}/*`, 'COUNT', 500);
      cursor = next;
      const fields = flat.filter((_, i) => i % 2 === 0);
      if (fields.length > 0) await this.redis.hdel(key, ...fields);
    } while (cursor !== '0');
    await this.redis.hdel(this.names.counts(channel), node);
  }

  private async exec(batch: readonly BatchItem[]): Promise<unknown[]> {
    let results: [Error | null, unknown][];
    try {
      results = await runBatch(this.redis, batch);
    } catch {
      throw new RelayError('unavailable', undefined, 1);
    }
    return (results ?? []).map(([err, value]) => {
      if (err) throw new RelayError('unavailable', undefined, 1);
      return value;
    });
  }

  private async wrap<T>(p: Promise<T>): Promise<T> {
    try {
      return await p;
    } catch {
      throw new RelayError('unavailable', undefined, 1);
    }
  }
}

/** A batch command on `key`: a single Redis pipelines them all, a Cluster one pipeline per slot. */
function op(key: string, add: (pipeline: ChainableCommander, key: string) => unknown): BatchItem {
  return { key, add: (p) => void add(p, key) };
}
