import type { ChainableCommander } from 'ioredis';
import type { Logger } from 'pino';
import { RelayError } from '../errors.js';
import { USER_NAMESPACE } from '../ingest/message.js';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import { type BatchItem, runBatch } from '../redis/slots.js';
import { WEBHOOK_PRESENCE_LUA } from '../webhooks/redis.js';
import {
  type Change,
  eventsOf,
  infoWithin,
  type PresenceChannelPredicate,
  PresenceEmitter,
} from './events.js';
import type { CommonOptions } from './memory.js';
import { byUser } from './memory.js';
import {
  type ChannelMember,
  type LocalMembership,
  type Member,
  NO_COUNTERS,
  type NodeInfo,
  type Presence,
  type PresenceListener,
} from './types.js';

/**
 * One script for every presence write, so that recording a socket and
 * deciding whether it was its user's first (or last) anywhere, and the
 * channel's first (or last) user, are one atomic step: concurrent joins and
 * leaves on any number of nodes see each transition exactly once.
 *
 * KEYS (all in the channel's hash slot): members `<node>/<socket>` -> user,
 * node counts `<node>` -> sockets, user counts user -> sockets, infos user ->
 * user_info. ARGV: op, node, own ('1' for a user's own channel, whose
 * sockets are all one user's: the members hash is the user's socket count,
 * and no user count or info is kept, which saves two keys per online user),
 * then the op's own.
 *
 * Every transition passes through `edge()`, which queues its webhook events
 * in the same atomic step (ARGV[7] on; see WEBHOOK_PRESENCE_LUA). ARGV[4..6]
 * are the op's own (a leave pads them).
 *
 * Replies: join/leave {code, user, info}; clean {cursor, code, user, info,
 * code, user, info, ...} with only the sockets whose removal was a
 * transition. code: 0 nothing happened (a socket already recorded, or not
 * there), 1 recorded without a transition, 2 the user's first / last socket in
 * the channel, 3 that and the channel's first / last user.
 */
const PRESENCE_LUA = `
local members, counts, users, infos = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, node, own = ARGV[1], ARGV[2], ARGV[3] == '1'
local out = {}
${WEBHOOK_PRESENCE_LUA}
local function edge(code, user, info)
  out[#out + 1] = code
  out[#out + 1] = user
  out[#out + 1] = info
  if whOn then whEdge(op == 'join', own, code, user, info) end
end

local function drop(field, user)
  redis.call('HDEL', members, field)
  if redis.call('HINCRBY', counts, node, -1) <= 0 then redis.call('HDEL', counts, node) end
  if own then
    if redis.call('HLEN', members) > 0 then return 1 end
    edge(2, user, '')
    return 0
  end
  if redis.call('HINCRBY', users, user, -1) > 0 then return 1 end
  redis.call('HDEL', users, user)
  local info = redis.call('HGET', infos, user) or ''
  redis.call('HDEL', infos, user)
  if redis.call('HLEN', users) == 0 then edge(3, user, info) else edge(2, user, info) end
  return 0
end

if op == 'join' then
  local field, user, info = ARGV[4], ARGV[5], ARGV[6]
  if redis.call('HSETNX', members, field, user) == 0 then return {0, user, ''} end
  redis.call('HINCRBY', counts, node, 1)
  if own then
    if redis.call('HLEN', members) > 1 then return {1, user, ''} end
    edge(2, user, info)
    return out
  end
  local sockets = redis.call('HINCRBY', users, user, 1)
  if info ~= '' then redis.call('HSET', infos, user, info) elseif sockets == 1 then redis.call('HDEL', infos, user) end
  if sockets > 1 then return {1, user, ''} end
  if redis.call('HLEN', users) == 1 then edge(3, user, info) else edge(2, user, info) end
  return out
end

if op == 'leave' then
  local field = ARGV[4]
  local user = redis.call('HGET', members, field)
  if not user then return {0, '', ''} end
  if drop(field, user) == 1 then return {1, user, ''} end
  return out
end

-- clean: removes a dead node's sockets, a bounded number per call.
local scan = redis.call('HSCAN', members, ARGV[4], 'MATCH', ARGV[5], 'COUNT', tonumber(ARGV[6]))
out[1] = scan[1]
local flat = scan[2]
for i = 1, #flat, 2 do drop(flat[i], flat[i + 1]) end
if scan[1] == '0' then redis.call('HDEL', counts, node) end
return out
`;

interface PresenceCommands {
  relayPresence(...args: (string | number)[]): Promise<unknown>;
}
type ScriptedRedis = Redis & PresenceCommands;

/** A join or leave waiting for the next flush. */
interface Op {
  readonly kind: 'join' | 'leave';
  readonly channel: string;
  readonly socketId: string;
  readonly member?: Member;
}

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Webhook queues the presence script writes each transition to (see
 * src/webhooks/redis.ts): per receiver its queue and lease keys in the
 * channel's slot, and its due set where one script may touch it.
 */
export interface PresenceWebhooks {
  /** Receivers' keys for a channel: `stride` keys each. */
  keys(channel: string): string[];
  readonly receivers: number;
  /** 3 (queue, lease, due set) on one Redis, 2 on a Cluster. */
  readonly stride: 2 | 3;
  /** Length of `keys(channel)` (one Redis: the byte counter after the receivers' keys). */
  readonly keyCount: number;
  /** Event kinds as ",a,b,". */
  readonly kinds: string;
  readonly debounceMs: number;
  nextId(): string;
  /** Before a flush: a promise when the room must be read first (a Cluster near the bound). */
  fresh(): Promise<void> | undefined;
  /** ARGV[17]: the byte bound (one Redis) or the room left (Cluster). */
  bound(): number;
  /** Reads the script's webhook entries (refusals, bytes) from `reply[from]` on, before its events are emitted. */
  replied(channel: string, reply: readonly unknown[], from: number): void;
}

export interface RedisPresenceOptions extends CommonOptions {
  /** Queue webhook events with each transition; off when undefined. */
  readonly webhooks?: PresenceWebhooks | undefined;
  readonly redis: Redis;
  readonly names: RedisNames;
  /** Seconds after its last heartbeat a node stops counting and is cleaned up after. */
  readonly ttlSeconds: number;
  readonly log: Logger;
}

/** Fields the clean script scans per call: keeps each call short on a channel with many sockets. */
const CLEAN_BATCH = 500;
/** Channels scanned at once when re-registering. */
const RECONCILE_CONCURRENCY = 100;

/**
 * Presence in Redis. Per channel (in its hash slot): the members
 * (`<node>/<socket>` -> user), the sockets per node, the sockets per user and
 * each user's `user_info`; per node a heartbeat in a sorted set and the set
 * of channels it has sockets in.
 *
 * Readers ignore entries of nodes whose heartbeat is older than the TTL. A
 * live node checks for such nodes on every heartbeat (a third of the TTL)
 * and removes their sockets under a lock, producing their transitions, so a
 * node killed with SIGKILL is gone from every channel within about 1.3 TTL.
 *
 * Writes from many sockets are coalesced into one pipeline per tick; each
 * join or leave is one script call in it.
 */
export class RedisPresence implements Presence {
  private readonly redis: ScriptedRedis;
  private queue: Op[] = [];
  private touched = new Set<string>();
  private waiters: Pending[] = [];
  private flushScheduled = false;
  /** The write out now, if any (see flush()). */
  private inFlight: Promise<void> | undefined;
  /** The next flush deletes this node's channel set before writing it again (re-registration). */
  private resetChannelSet = false;
  private alive = new Set<string>();
  /** Last heartbeat (ms) of each node alive at this node's last heartbeat; undefined before the first. */
  private beats: Map<string, number> | undefined;
  /** Set when writes may have been lost: everything is written again on the next heartbeat. */
  private dirty = false;
  /** Channels of writes that failed: they may hold entries of sockets that have gone since. */
  private suspects = new Set<string>();
  /** Whether this process has registered once: after that, finding itself missing means it was cleaned up. */
  private registered = false;
  private beating = false;
  /** The registration being written, if any. */
  private registration: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly startedAt = Date.now();
  private cleaning = false;
  /**
   * When this node may take others for dead: a TTL after it last (re)gained
   * Redis. After an outage every node's heartbeat is old; this gives the others
   * a TTL to heartbeat again before anyone removes them.
   */
  private cleanFrom: number | undefined;
  private readonly emitter: PresenceEmitter;

  private readonly names: RedisNames;
  private readonly nodeId: string;
  private readonly ttlSeconds: number;
  private readonly local: LocalMembership;
  private readonly log: Logger;
  private readonly isPresenceChannel: PresenceChannelPredicate;
  private readonly maxInfoBytes: number;
  private readonly onInfoRefused: () => void;
  private readonly webhooks: PresenceWebhooks | undefined;

  constructor(options: RedisPresenceOptions) {
    const { redis } = options;
    this.names = options.names;
    this.nodeId = options.nodeId;
    this.ttlSeconds = options.ttlSeconds;
    this.local = options.local;
    this.log = options.log;
    this.isPresenceChannel = options.isPresenceChannel;
    this.maxInfoBytes = options.maxInfoBytes;
    this.onInfoRefused = options.onInfoRefused ?? (() => {});
    this.webhooks = options.webhooks;
    const hookKeys = this.webhooks ? this.webhooks.keyCount : 0;
    redis.defineCommand('relayPresence', { numberOfKeys: 4 + hookKeys, lua: PRESENCE_LUA });
    this.redis = redis as ScriptedRedis;
    this.emitter = new PresenceEmitter(this.log);
    this.alive.add(this.nodeId);
    this.timer = setInterval(() => void this.heartbeat(), (this.ttlSeconds * 1000) / 3);
    this.timer.unref();
    // Register as soon as the connection is up, not one interval later. After
    // any interruption writes may have been lost (or Redis came back empty),
    // so the whole membership is written again.
    redis.on('close', () => {
      this.dirty = true;
      this.cleanFrom = undefined;
    });
    redis.on('ready', () => void this.heartbeat());
    if (redis.status === 'ready') void this.heartbeat();
  }

  join(channel: string, socketId: string, member: Member): Promise<void> {
    if (!infoWithin(member.info, this.maxInfoBytes)) {
      this.onInfoRefused();
      this.log.warn(
        { channel, user: member.user, limit: this.maxInfoBytes },
        'user_info over the limit: member kept without it',
      );
      member = { user: member.user };
    }
    this.queue.push({ kind: 'join', channel, socketId, member });
    return this.schedule(channel);
  }

  leave(channel: string, socketId: string): Promise<void> {
    this.queue.push({ kind: 'leave', channel, socketId });
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

  countFrom(hashes: readonly (readonly string[])[]): number[] | undefined {
    const beats = this.beats;
    if (beats === undefined) return undefined;
    // A node counts until its last known heartbeat is a TTL old: the same
    // rule as count(), with heartbeats at most a third of a TTL out of date
    // (a live node beats again before it could fall out).
    const since = Date.now() - this.ttlSeconds * 1000;
    const totals: number[] = [];
    for (const flat of hashes) {
      let total = 0;
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const node = flat[i]!;
        if (node === this.nodeId) total += Number(flat[i + 1]);
        else {
          const beat = beats.get(node);
          // A node that joined since this one last read the heartbeats: only Redis knows (count()).
          if (beat === undefined) return undefined;
          if (beat >= since) total += Number(flat[i + 1]);
        }
      }
      totals.push(total);
    }
    return totals;
  }

  async members(channel: string): Promise<ChannelMember[]> {
    const [aliveIds, all, infos] = await this.exec([
      this.aliveOp(),
      op(this.names.members(channel), (p, k) => p.hgetall(k)),
      op(this.names.userInfo(channel), (p, k) => p.hgetall(k)),
    ]);
    const alive = this.aliveFrom(aliveIds);
    const sockets = new Map<string, number>();
    for (const [field, user] of Object.entries(all as Record<string, string>)) {
      const node = field.slice(0, field.indexOf('/'));
      if (alive.has(node)) sockets.set(user, (sockets.get(user) ?? 0) + 1);
    }
    const info = infos as Record<string, string>;
    return [...sockets]
      .map(([user, n]) =>
        Object.hasOwn(info, user) ? { user, sockets: n, info: info[user] } : { user, sockets: n },
      )
      .sort(byUser);
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

  onEvent(listener: PresenceListener): () => void {
    return this.emitter.on(listener);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    // Leave at once rather than after a TTL: this node is going away on purpose,
    // and its members' transitions are best produced by the node that saw them.
    await this.registration;
    for (const [channel, socketId] of this.local.entries())
      this.queue.push({ kind: 'leave', channel, socketId });
    try {
      await this.flush();
      await runBatch(this.redis, [
        op(this.names.nodeChannels(this.nodeId), (p, k) => p.del(k)),
        op(this.names.nodes, (p, k) => p.zrem(k, this.nodeId)),
        op(this.names.node(this.nodeId), (p, k) => p.del(k)),
      ]);
    } catch {
      // Redis is away: the others treat this node as dead after the TTL and clean up after it.
    }
  }

  private field(socketId: string): string {
    return `${this.nodeId}/${socketId}`;
  }

  private schedule(channel?: string): Promise<void> {
    if (channel !== undefined) this.touched.add(channel);
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      if (this.inFlight === undefined) setImmediate(() => void this.flush());
    }
    return done;
  }

  /**
   * One write at a time: what is queued while a write is out goes in the
   * next, sent once this one is answered. Two writes out at once could be
   * answered (on a Redis Cluster, one waiting on a redirect or a slow slot)
   * in another order than Redis ran them, and their transitions would be
   * dispatched out of order (a member.added before its channel.occupied).
   */
  private flush(): Promise<void> {
    if (this.inFlight) {
      this.flushScheduled = true;
      return this.inFlight.then(() => this.flush());
    }
    const run = this.write().finally(() => {
      this.inFlight = undefined;
      if (this.flushScheduled) setImmediate(() => void this.flush());
    });
    this.inFlight = run;
    return run;
  }

  /**
   * Writes the queued joins and leaves (a script call each) and the node's
   * channel set, then dispatches the transitions the scripts decided, in
   * queue order. A reply that is lost leaves its channel suspect and the
   * node dirty: the next heartbeat writes the membership again.
   */
  private async write(): Promise<void> {
    this.flushScheduled = false;
    const ops = this.queue;
    const touched = this.touched;
    const waiters = this.waiters;
    const reset = this.resetChannelSet;
    this.queue = [];
    this.touched = new Set();
    this.waiters = [];
    this.resetChannelSet = false;
    if (ops.length === 0 && touched.size === 0 && !reset) {
      for (const w of waiters) w.resolve();
      return;
    }
    const mine = this.names.nodeChannels(this.nodeId);
    const room = this.webhooks?.fresh();
    if (room) await room;
    const batch: BatchItem[] = ops.map((o) => this.scriptOp(o));
    // Same slot as the SADDs after it, so it runs before them on a Cluster too.
    if (reset) batch.push(op(mine, (p, k) => p.del(k)));
    for (const channel of touched) {
      // The node's channel set follows its sockets as they are now: after
      // every join and leave queued so far, in the order the pipelines go out.
      if (this.local.sockets(channel) > 0) batch.push(op(mine, (p, k) => p.sadd(k, channel)));
      else batch.push(op(mine, (p, k) => p.srem(k, channel)));
    }
    let results: [Error | null, unknown][];
    try {
      results = await runBatch(this.redis, batch);
    } catch (err) {
      results = batch.map(() => [err as Error, null]);
    }
    let failed: Error | undefined;
    const now = Date.now();
    for (const [i, o] of ops.entries()) {
      const [err, reply] = results[i] ?? [new Error('no reply'), null];
      if (err) {
        failed ??= err;
        this.suspects.add(o.channel);
        continue;
      }
      this.webhooks?.replied(o.channel, reply as unknown[], 3);
      const change = this.changeOf(o, reply as [number, string, string]);
      if (change) this.emitter.emit(eventsOf(change, this.isPresenceChannel, this.nodeId, now));
    }
    for (let i = ops.length; i < batch.length; i++) failed ??= results[i]?.[0] ?? undefined;
    if (failed) {
      this.dirty = true;
      if (reset) this.resetChannelSet = true;
      for (const w of waiters) w.reject(new RelayError('unavailable', undefined, 1));
    } else {
      for (const w of waiters) w.resolve();
    }
  }

  private scriptOp(o: Op): BatchItem {
    const keys = this.keysOf(o.channel);
    const own = isOwnChannel(o.channel);
    const args = [
      ...(o.kind === 'join'
        ? ['join', this.nodeId, own, this.field(o.socketId), o.member!.user, o.member!.info ?? '']
        : ['leave', this.nodeId, own, this.field(o.socketId), '', '']),
      ...this.hookArgs(o.channel),
    ];
    return {
      key: keys[0]!,
      add: (p) => void (p as unknown as PresenceCommands).relayPresence(...keys, ...args),
    };
  }

  private keysOf(channel: string): string[] {
    const n = this.names;
    return [
      n.members(channel),
      n.counts(channel),
      n.users(channel),
      n.userInfo(channel),
      ...(this.webhooks?.keys(channel) ?? []),
    ];
  }

  /** ARGV[7..17] of the script: the webhook events of this call's transitions. */
  private hookArgs(channel: string): (string | number)[] {
    const w = this.webhooks;
    if (!w) return [];
    return [
      '1',
      this.nodeId,
      Date.now(),
      w.nextId(),
      w.kinds,
      this.isPresenceChannel(channel) ? '1' : '0',
      w.debounceMs,
      channel,
      w.receivers,
      w.stride,
      w.bound(),
    ];
  }

  private changeOf(o: Op, [code, user, info]: [number, string, string]): Change | undefined {
    if (code < 2) return undefined;
    return {
      kind: o.kind,
      channel: o.channel,
      user,
      info: info === '' ? undefined : info,
      userEdge: true,
      channelEdge: code === 3,
      socket: o.socketId,
    };
  }

  private async heartbeat(): Promise<void> {
    if (this.beating) return;
    this.beating = true;
    const counters = (await this.local.counters?.().catch(() => undefined)) ?? NO_COUNTERS;
    const now = Date.now();
    const { sockets, users } = this.local.stats();
    const ttlMs = this.ttlSeconds * 1000;
    try {
      const nodes = this.names.nodes;
      const node = this.names.node(this.nodeId);
      const results = await this.exec([
        op(nodes, (p, k) => p.zadd(k, now, this.nodeId)),
        op(node, (p, k) => p.hset(k, { sockets, users, startedAt: this.startedAt, ...counters })),
        op(node, (p, k) => p.expire(k, this.ttlSeconds * 3)),
        op(nodes, (p, k) => p.zrangebyscore(k, now - ttlMs, '+inf', 'WITHSCORES')),
        op(nodes, (p, k) => p.zrangebyscore(k, '-inf', `(${now - ttlMs}`)),
      ]);
      const added = results[0] === 1;
      this.cleanFrom ??= now + ttlMs;
      if (!this.registered) {
        // First contact. Entries under this node id that are not this
        // process's sockets were left by a previous process with the same id.
        this.register(added ? undefined : this.nodeId, true);
      } else if (added || this.dirty) {
        // Missing from the heartbeat set: another node took this one for dead
        // (a long pause) and removed its sockets, or Redis lost its data.
        if (added)
          this.log.warn(
            'presence of this node was removed (taken for dead, or Redis lost it): registering again',
          );
        this.register(undefined, added);
      }
      const withScores = results[3] as string[];
      const beats = new Map<string, number>();
      for (let i = 0; i + 1 < withScores.length; i += 2) beats.set(withScores[i]!, Number(withScores[i + 1]));
      this.alive = new Set([...beats.keys(), this.nodeId]);
      const dead = (results[4] as string[]).filter((id) => id !== this.nodeId);
      // Known dead (not unknown: countFrom leaves their sockets out rather than asking Redis).
      for (const id of dead) if (!beats.has(id)) beats.set(id, 0);
      this.beats = beats;
      if (dead.length > 0 && !this.cleaning && now >= this.cleanFrom) void this.cleanUp(dead);
    } catch {
      // A node that cannot reach Redis may have been cleaned up by the others: write it all again.
      this.dirty = true;
      this.cleanFrom = undefined;
    } finally {
      this.beating = false;
    }
  }

  /**
   * Registers the membership in the background, so heartbeats go on while a
   * large one is written (a node silent for a TTL would be taken for dead).
   * `leftoversOf`: also remove this node id's entries of sockets not here,
   * from every channel Redis lists for it. `urgent`: a registration already
   * running may predate the reason for this one, so run again after it.
   */
  private register(leftoversOf: string | undefined, urgent: boolean): void {
    if (this.registration) {
      if (urgent) this.dirty = true;
      return;
    }
    this.registration = (async () => {
      try {
        const stale = leftoversOf === undefined ? [...this.suspects] : await this.channelsOf(leftoversOf);
        await this.reregister(stale);
        this.registered = true;
      } catch {
        this.dirty = true;
      } finally {
        this.registration = undefined;
      }
    })();
  }

  /**
   * Writes this node's whole membership again (joins are idempotent: what
   * Redis still has is not counted twice) after removing, from the channels
   * given, entries of this node whose sockets are no longer here.
   */
  private async reregister(stale: readonly string[]): Promise<void> {
    this.dirty = false;
    // Channels are scanned a chunk at a time, their commands pipelined on the connection.
    for (let i = 0; i < stale.length; i += RECONCILE_CONCURRENCY) {
      await Promise.all(stale.slice(i, i + RECONCILE_CONCURRENCY).map((c) => this.dropStale(c)));
    }
    const channels = new Set<string>();
    for (const [channel, socketId, member] of this.local.entries()) {
      channels.add(channel);
      this.queue.push({ kind: 'join', channel, socketId, member });
      this.touched.add(channel);
    }
    this.resetChannelSet = true;
    try {
      await this.schedule();
    } catch (err) {
      this.dirty = true;
      throw err;
    }
    this.log.info({ channels: channels.size, reconciled: stale.length }, 'presence registered');
  }

  /** Leaves, for this node, every socket Redis has in the channel that is not here any more. */
  private async dropStale(channel: string): Promise<void> {
    const pattern = `${globEscape(this.nodeId)}/*`;
    let cursor = '0';
    do {
      const [next, flat] = await this.wrap(
        this.redis.hscan(this.names.members(channel), cursor, 'MATCH', pattern, 'COUNT', CLEAN_BATCH),
      );
      cursor = next;
      for (let i = 0; i < flat.length; i += 2) {
        const socketId = flat[i]!.slice(this.nodeId.length + 1);
        // Checked as the leave is queued: a socket that joins again later is queued after it.
        if (!this.local.has(channel, socketId)) void this.leave(channel, socketId).catch(() => {});
      }
    } while (cursor !== '0');
    this.suspects.delete(channel);
  }

  private async channelsOf(node: string): Promise<string[]> {
    return this.wrap(this.redis.smembers(this.names.nodeChannels(node)));
  }

  /**
   * Removes what dead nodes left behind, producing their transitions. One
   * live node does it per dead node (a lock), and it is safe if two do: each
   * socket's removal is atomic and counted once. A cleaner that stops half-way
   * leaves the rest to the next one once its lock expires.
   */
  private async cleanUp(dead: string[]): Promise<void> {
    this.cleaning = true;
    const lockMs = this.ttlSeconds * 1000;
    try {
      for (const id of dead) {
        const lock = this.names.cleanup(id);
        if ((await this.redis.set(lock, this.nodeId, 'PX', lockMs, 'NX')) !== 'OK') continue;
        // Another cleaner may have finished with it, and it may have come back since.
        const score = await this.redis.zscore(this.names.nodes, id);
        if (score === null || Number(score) >= Date.now() - lockMs) {
          await this.redis.del(lock);
          continue;
        }
        const started = Date.now();
        let sockets = 0;
        let cursor = '0';
        do {
          const [next, channels] = await this.redis.sscan(this.names.nodeChannels(id), cursor, 'COUNT', 200);
          cursor = next;
          for (const channel of channels) {
            sockets += await this.removeNodeFromChannel(id, channel);
            await this.redis.pexpire(lock, lockMs);
          }
        } while (cursor !== '0');
        await runBatch(this.redis, [
          op(this.names.nodeChannels(id), (p, k) => p.del(k)),
          op(this.names.node(id), (p, k) => p.del(k)),
          op(this.names.nodes, (p, k) => p.zrem(k, id)),
          op(lock, (p, k) => p.del(k)),
        ]);
        this.log.info({ node: id, sockets, ms: Date.now() - started }, 'removed the presence of a dead node');
      }
    } catch (err) {
      this.log.debug({ err }, 'presence cleanup interrupted');
    } finally {
      this.cleaning = false;
    }
  }

  /** Removes a dead node's sockets from one channel; answers how many transitions that made. */
  private async removeNodeFromChannel(node: string, channel: string): Promise<number> {
    const keys = this.keysOf(channel);
    const pattern = `${globEscape(node)}/*`;
    let edges = 0;
    let cursor = '0';
    do {
      await this.webhooks?.fresh();
      const reply = (await this.redis.relayPresence(
        ...keys,
        'clean',
        node,
        isOwnChannel(channel),
        cursor,
        pattern,
        CLEAN_BATCH,
        ...this.hookArgs(channel),
      )) as (string | number)[];
      cursor = String(reply[0]);
      this.webhooks?.replied(channel, reply, 1);
      const now = Date.now();
      for (let i = 1; i < reply.length; i += 3) {
        // Negative: the webhook entries, read above.
        if (Number(reply[i]) < 0) continue;
        const info = reply[i + 2] as string;
        const change: Change = {
          kind: 'leave',
          channel,
          user: reply[i + 1] as string,
          info: info === '' ? undefined : info,
          userEdge: true,
          channelEdge: reply[i] === 3,
        };
        this.emitter.emit(eventsOf(change, this.isPresenceChannel, this.nodeId, now));
        edges++;
      }
    } while (cursor !== '0');
    return edges;
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

/** '1' for a user's own channel (all its sockets are one user's), as the script takes it. */
function isOwnChannel(channel: string): string {
  return channel.startsWith(`${USER_NAMESPACE}:`) ? '1' : '0';
}

/** A node id as a literal in a Redis MATCH pattern. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}
