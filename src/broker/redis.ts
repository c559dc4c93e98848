import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { RelayError } from '../errors.js';
import {
  type Delivery,
  decodePublication,
  encodePublication,
  malformedReason,
  messageOf,
  type Position,
  type Publication,
  UNBORN_EPOCH,
} from '../ingest/message.js';
import { isCluster, type Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import { bySlot, runBatch } from '../redis/slots.js';
import type { DropReporter } from './dropped.js';
import type { Broker, ChannelTop, HistoryEntry, HistoryResult, PublishItem, Retention } from './types.js';

// Appends to each channel's stream and publishes to its delivery channel in
// one script, so the order in which subscribers receive a channel's messages
// is the order of their offsets, even with many nodes publishing at once, and
// no subscriber can be told about an offset that history does not hold.
//
// With Redis Cluster, one call carries only channels of one slot (their keys
// and delivery channel share the channel's hash tag) and fans out with
// SPUBLISH, so the message travels only within that slot's shard. When
// publishes must wait for replicas, the script only appends ('none') and the
// caller publishes after WAIT: a subscriber must never see a message that a
// failover could still take back.
//
// One call may carry several publications (a batch), each to its channels.
// Everything a publish creates expires with the channel's retention: the
// stream and the meta hash after its history TTL (renewed by each publish),
// the marker after the idempotency window. Reads create nothing.
//
// With counting on, it also answers each channel's presence counts hash
// (node -> sockets), so one round trip writes the message and tells the
// publisher who was online.
//
// KEYS: per channel of each publication [stream, meta, (appended-marker), (counts)]:
//       the marker only for an idempotent publication, the counts only when counting
// ARGV: new epoch, count ('1': KEYS carry counts), fan-out ('publish', 'spublish' or 'none'),
//       then per publication [payload, ts, idempotency ttl ms (0: off), channel count,
//       then per channel [history size, history ttl s, delivery channel]]
// Returns per channel of each publication, flattened, "<offset>:<epoch>" (and,
// when counting, the counts hash right after it).
//
// Cost per channel matters (every publish runs it): numbers are passed on as
// the ARGV strings they came as, and the offset is turned into text once
// (Lua formats a number with sprintf at every concatenation).
const PUBLISH_LUA = `
local newEpoch = ARGV[1]
local counting = ARGV[2] == '1'
local fanout = ARGV[3]
local a = 4
local k = 1
local out = {}
while a <= #ARGV do
  local payload = ARGV[a]
  local ts = ARGV[a + 1]
  local idemTtl = ARGV[a + 2]
  local idem = idemTtl ~= '0'
  local n = tonumber(ARGV[a + 3])
  a = a + 4
  for _ = 1, n do
    local stream, meta = KEYS[k], KEYS[k + 1]
    local size = ARGV[a]
    local ttl = ARGV[a + 1]
    local chan = ARGV[a + 2]
    k = k + 2
    a = a + 3
    local marker = false
    if idem then
      marker = KEYS[k]
      k = k + 1
    end
    local counts = false
    if counting then
      counts = KEYS[k]
      k = k + 1
    end
    local prev = false
    if idem then prev = redis.call('get', marker) end
    if prev then
      out[#out + 1] = prev
    else
      local epoch = redis.call('hget', meta, 'e')
      if not epoch then
        epoch = newEpoch
        redis.call('hset', meta, 'e', epoch)
      end
      local offset = tostring(redis.call('hincrby', meta, 's', 1))
      redis.call('hset', meta, 't', ts)
      redis.call('expire', meta, ttl)
      if size ~= '0' then
        redis.call('xadd', stream, 'MAXLEN', size, offset .. '-0', 't', ts, 'p', payload)
        redis.call('expire', stream, ttl)
      end
      local pos = offset .. ':' .. epoch
      if fanout ~= 'none' then redis.call(fanout, chan, pos .. ':' .. payload) end
      if idem then redis.call('set', marker, pos, 'PX', idemTtl) end
      out[#out + 1] = pos
    end
    if counts then out[#out + 1] = redis.call('hgetall', counts) end
  end
end
return out
`;

// Reads a channel's position and, optionally, the entries after an offset, in
// one step so the entries and the top offset agree. Writes nothing: a channel
// without meta (never published, or expired) answers the unborn epoch, so
// subscribing to or reading any number of channels costs Redis no memory.
// KEYS: stream, meta. ARGV: after, limit, unborn epoch.
// Returns { epoch, top, entries, last publish ts }.
const READ_LUA = `
local m = redis.call('hmget', KEYS[2], 'e', 's', 't')
local epoch = m[1] or ARGV[3]
local top = tonumber(m[2] or '0')
local ts = tonumber(m[3] or '0')
local after = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit <= 0 or after >= top or not m[1] then return { epoch, top, {}, ts } end
return { epoch, top, redis.call('xrange', KEYS[1], (after + 1) .. '-0', '+', 'COUNT', limit), ts }
`;

// Gives a channel a new epoch if it still has the expected one (another node
// may have renewed it already). KEYS: meta. ARGV: expected, new epoch, ttl s.
const RENEW_EPOCH_LUA = `
local e = redis.call('hget', KEYS[1], 'e')
if e == ARGV[1] or not e then
  redis.call('hset', KEYS[1], 'e', ARGV[2])
  redis.call('expire', KEYS[1], ARGV[3])
  return ARGV[2]
end
return e
`;

/** Channels one shared script call carries at most; past it the queue is written at once. */
const MAX_CALL_CHANNELS = 2000;

/** Delivery channels one SUBSCRIBE or UNSUBSCRIBE names at most. */
const MAX_SUBSCRIPTION_BATCH = 1000;

type RawEntry = [string, string[]];
type ReadReply = [string, number, RawEntry[], number];

interface RelayCommands {
  relayPublish(numKeys: number, ...args: (string | number)[]): Promise<string[]>;
  relayRenewEpoch(meta: string, expected: string, epoch: string, ttl: number): Promise<string>;
  relayRead(stream: string, meta: string, after: number, limit: number, unborn: string): Promise<ReadReply>;
}

type ScriptedRedis = Redis & RelayCommands;

/** A publication with its encoding: what one script call carries. */
type Encoded = PublishItem & { readonly payload: string };

/** A subscription change waiting for this turn's command. */
interface SubscriptionChange {
  readonly kind: 'subscribe' | 'unsubscribe';
  readonly name: string;
  resolve(): void;
  reject(err: unknown): void;
}

/** A caller of publishManyCounted waiting for this turn's script call. */
interface QueuedCall {
  readonly one: false;
  readonly items: readonly PublishItem[];
  /** Its items that have channels, with their publications encoded: what the script call carries. */
  readonly encoded: readonly Encoded[];
  resolve(result: { positions: Position[][]; counts: string[][][] }): void;
  reject(err: unknown): void;
}

/** A caller of publishCounted: its one publication is also what the script call carries. */
interface QueuedOne extends Encoded {
  readonly one: true;
  /** publication.data already parsed, when the caller had it. */
  readonly value: unknown;
  resolve(result: { positions: Position[]; counts: string[][] }): void;
  reject(err: unknown): void;
}

/** How far a publish must have travelled before it is fanned out and acknowledged. */
export interface Durability {
  /** Replicas that must confirm the write (Redis WAIT); 0: the master alone. */
  readonly replicas: number;
  /** Longest wait for them, in ms; after it the publish answers 503. */
  readonly timeoutMs: number;
}

export class RedisBroker implements Broker {
  private readonly cmd: ScriptedRedis;
  private readonly subscribedChannels = new Set<string>();
  private deliveryHandler: (d: Delivery) => void = () => {};
  private ownHandler: ((d: Delivery) => boolean) | undefined;
  /**
   * Per channel, the highest position of this node's own publishes that the
   * hub took from the script's reply: their copies coming back through Redis
   * (at or below it, same epoch) are dropped before they are decoded.
   */
  private readonly early = new Map<string, Position>();
  private resyncHandler: () => void = () => {};
  private connectedOnce = false;
  private readonly epochSeed = randomBytes(4).toString('hex');
  private epochCounter = 0;
  /** Redis Cluster: sharded pub/sub, and one script call per slot. */
  private readonly sharded: boolean;
  /** Counted publishes waiting for this turn's script call. */
  private queued: (QueuedCall | QueuedOne)[] = [];
  private queuedChannels = 0;
  private flushing = false;
  /** Subscription changes asked for this turn, in order, for one command per run of the same kind. */
  private subscriptionChanges: SubscriptionChange[] = [];

  constructor(
    cmd: Redis,
    private readonly sub: Redis,
    private readonly names: RedisNames,
    private readonly retention: (channel: string) => Retention,
    private readonly idempotencyMs: number,
    private readonly log: Logger,
    private readonly durability: Durability = { replicas: 0, timeoutMs: 0 },
    private readonly dropped: DropReporter = () => {},
  ) {
    cmd.defineCommand('relayPublish', { lua: PUBLISH_LUA });
    cmd.defineCommand('relayRead', { numberOfKeys: 2, lua: READ_LUA });
    cmd.defineCommand('relayRenewEpoch', { numberOfKeys: 1, lua: RENEW_EPOCH_LUA });
    this.cmd = cmd as ScriptedRedis;
    this.sharded = isCluster(cmd);
    sub.on(this.sharded ? 'smessage' : 'message', (name: string, payload: string) =>
      this.receive(name, payload),
    );
    if (isCluster(sub)) {
      // Each master's sharded subscriber reconnects and resubscribes on its
      // own; the group says so once they are all back. It resubscribes without
      // waiting for the answers, so the catch-up waits a moment longer.
      sub.on('subscribersReady', () => {
        if (!this.connectedOnce) {
          this.connectedOnce = true;
          return;
        }
        setTimeout(() => this.resyncHandler(), 250).unref();
      });
      if (sub.status === 'ready') this.connectedOnce = true;
      return;
    }
    sub.on('ready', () => {
      if (!this.connectedOnce) {
        this.connectedOnce = true;
        return;
      }
      // ioredis emits 'ready' and then resends the SUBSCRIBEs; a PING queued
      // after them answers once they are all in effect, and only then can a
      // catch-up from history be sure to miss nothing.
      setImmediate(() => {
        this.sub.ping().then(
          () => this.resyncHandler(),
          () => {},
        );
      });
    });
    if (sub.status === 'ready') this.connectedOnce = true;
  }

  async publish(
    publication: Publication,
    channels: readonly string[],
    idempotent: boolean,
    key: string = publication.id,
  ): Promise<Position[]> {
    if (channels.length === 0) return [];
    const payload = encodePublication(publication);
    if (!this.sharded) return this.publishGroup(payload, publication, channels, idempotent, key);
    // A Cluster script may only touch one slot: one call per slot, at once.
    // Each channel is still appended and fanned out atomically; a publish to
    // channels of several slots is not one step, but a retry with the same id
    // completes what failed without doubling what succeeded.
    const out: Position[] = new Array(channels.length);
    await Promise.all(
      [...bySlot(channels, (c) => this.names.meta(c)).values()].map(async (indexes) => {
        const positions = await this.publishGroup(
          payload,
          publication,
          indexes.map((i) => channels[i]!),
          idempotent,
          key,
        );
        indexes.forEach((i, j) => {
          out[i] = positions[j]!;
        });
      }),
    );
    return out;
  }

  /**
   * A batch in one script call, where one call can carry it all: a single
   * Redis (or Sentinel) and no waiting for replicas. Otherwise each
   * publication goes its own way, concurrently.
   */
  async publishMany(items: readonly PublishItem[]): Promise<Position[][]> {
    if (items.length === 0) return [];
    if (this.sharded || this.durability.replicas > 0 || items.length === 1) {
      return Promise.all(items.map((i) => this.publish(i.publication, i.channels, i.idempotent, i.key)));
    }
    const encoded = items
      .filter((i) => i.channels.length > 0)
      .map((i) => ({ ...i, payload: encodePublication(i.publication) }));
    const reply = await this.run(() => this.cmd.relayPublish(...this.scriptArgs('publish', encoded)));
    let next = 0;
    return items.map((i) => i.channels.map(() => parsePosition(reply[next++]!)));
  }

  /** One script call for the whole batch, answering positions and presence counts per channel. */
  //
  // Publishes arriving in the same event-loop turn (concurrent requests) are
  // written by one script call: one command to encode, send and parse, and
  // one script run in Redis, for all of them. Each call is still atomic per
  // channel and in arrival order.
  //
  // Not async: the caller's promise is the one the flush settles, without a further hop.
  publishManyCounted(
    items: readonly PublishItem[],
  ): Promise<{ positions: Position[][]; counts: string[][][] } | undefined> {
    if (this.sharded || this.durability.replicas > 0) return Promise.resolve(undefined);
    let channels = 0;
    const encoded: Encoded[] = [];
    for (const i of items) {
      if (i.channels.length === 0) continue;
      channels += i.channels.length;
      encoded.push({ ...i, payload: encodePublication(i.publication) });
    }
    if (channels === 0)
      return Promise.resolve({ positions: items.map(() => []), counts: items.map(() => []) });
    return new Promise((resolve, reject) => {
      this.enqueue({ one: false, items, encoded, resolve, reject }, channels);
    });
  }

  /**
   * publishManyCounted for one publication without an idempotency id, the
   * usual publish: the same turn's script call, with one queue entry that is
   * also the item the call carries, and no nesting per item in the answer.
   */
  publishCounted(
    publication: Publication,
    channels: readonly string[],
    value?: unknown,
  ): Promise<{ positions: Position[]; counts: string[][] }> | undefined {
    if (this.sharded || this.durability.replicas > 0) return undefined;
    if (channels.length === 0) return Promise.resolve({ positions: [], counts: [] });
    const payload = encodePublication(publication);
    return new Promise((resolve, reject) => {
      this.enqueue(
        {
          one: true,
          publication,
          channels,
          idempotent: false,
          key: undefined,
          payload,
          value,
          resolve,
          reject,
        },
        channels.length,
      );
    });
  }

  private enqueue(call: QueuedCall | QueuedOne, channels: number): void {
    this.queued.push(call);
    this.queuedChannels += channels;
    if (this.queuedChannels >= MAX_CALL_CHANNELS) this.flush();
    else if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => this.flush());
    }
  }

  /** Publishes queued this turn, written by one script call; each caller gets its share of the reply. */
  private flush(): void {
    this.flushing = false;
    const calls = this.queued;
    if (calls.length === 0) return;
    this.queued = [];
    this.queuedChannels = 0;
    const all: Encoded[] = [];
    for (const c of calls) {
      if (c.one) all.push(c);
      else for (const e of c.encoded) all.push(e);
    }
    this.run(() => this.cmd.relayPublish(...this.scriptArgs('publish', all, true))).then(
      (reply) => {
        // Per channel, in the order queued: "<offset>:<epoch>", then its counts hash.
        const flat = reply as unknown as (string | string[])[];
        let next = 0;
        for (const c of calls) {
          if (c.one) {
            const share = shareOf(flat, next, c.channels.length);
            next += 2 * c.channels.length;
            this.deliverOwn(c.publication, c.channels, share.positions, c.value);
            c.resolve(share);
            continue;
          }
          const positions: Position[][] = [];
          const counts: string[][][] = [];
          for (const i of c.items) {
            const share = shareOf(flat, next, i.channels.length);
            next += 2 * i.channels.length;
            // A repeated idempotent id answers its first position, whose copy went out then.
            if (!i.idempotent) this.deliverOwn(i.publication, i.channels, share.positions);
            positions.push(share.positions);
            counts.push(share.counts);
          }
          c.resolve({ positions, counts });
        }
      },
      (err: unknown) => {
        for (const c of calls) c.reject(err);
      },
    );
  }

  /**
   * Offers a publish this node just wrote to the hub for the channels it
   * subscribes, before the caller is answered: a socket on this node gets it
   * without waiting for the copy to come back through Redis (its sockets
   * used to wait a round trip longer than the other nodes').
   */
  private deliverOwn(
    publication: Publication,
    channels: readonly string[],
    positions: readonly Position[],
    value?: unknown,
  ): void {
    const handler = this.ownHandler;
    if (handler === undefined) return;
    let message: Delivery['message'] | undefined;
    for (let i = 0; i < channels.length; i++) {
      const channel = channels[i]!;
      if (!this.subscribedChannels.has(channel)) continue;
      const position = positions[i]!;
      try {
        message ??= messageOf(publication, value);
        if (handler({ channel, offset: position.offset, epoch: position.epoch, message })) {
          this.early.set(channel, position);
        }
      } catch (err) {
        // Its copy through Redis is delivered as usual.
        this.log.warn({ err, channel }, 'delivering an own publish early failed');
      }
    }
  }

  private scriptArgs(
    fanout: 'publish' | 'spublish' | 'none',
    items: readonly Encoded[],
    counting = false,
  ): [number, ...(string | number)[]] {
    const keys: string[] = [];
    const argv: (string | number)[] = [this.newEpoch(), counting ? '1' : '0', fanout];
    for (const { publication, channels, idempotent, payload, key } of items) {
      // The script reads '0' as "not idempotent" (and then takes no marker key).
      const idem = idempotent && this.idempotencyMs > 0;
      argv.push(payload, publication.ts, idem ? this.idempotencyMs : 0, channels.length);
      for (const c of channels) {
        const r = this.retention(c);
        keys.push(this.names.stream(c), this.names.meta(c));
        if (idem) keys.push(this.names.appended(c, key ?? publication.id));
        if (counting) keys.push(this.names.counts(c));
        argv.push(r.size, r.ttl, this.names.deliver(c));
      }
    }
    return [keys.length, ...keys, ...argv];
  }

  /** Appends to and fans out channels that one script call may touch together. */
  private async publishGroup(
    payload: string,
    publication: Publication,
    channels: readonly string[],
    idempotent: boolean,
    key: string,
  ): Promise<Position[]> {
    const waiting = this.durability.replicas > 0;
    const fanout = waiting ? 'none' : this.sharded ? 'spublish' : 'publish';
    const args = this.scriptArgs(fanout, [{ payload, publication, channels, idempotent, key }]);
    if (!waiting) {
      const positions = (await this.run(() => this.cmd.relayPublish(...args))).map(parsePosition);
      // A repeated idempotent id answers its first position, whose copy went out then.
      if (!idempotent) this.deliverOwn(publication, channels, positions);
      return positions;
    }

    // WAIT counts the replicas that hold every write this connection made so
    // far, so it goes on the same connection right behind the script (a
    // Cluster pipeline goes to the one master of its slot).
    const [[scriptErr, reply], [waitErr, acked]] = await this.run(async () => {
      const pipeline = this.cmd.pipeline() as unknown as RelayCommands & {
        wait(replicas: number, timeout: number): unknown;
        exec(): Promise<[Error | null, unknown][]>;
      };
      pipeline.relayPublish(...args);
      pipeline.wait(this.durability.replicas, this.durability.timeoutMs);
      return (await pipeline.exec()) as [[Error | null, string[]], [Error | null, number]];
    });
    if (scriptErr) return this.run(() => Promise.reject(scriptErr));
    const positions = reply.map(parsePosition);
    if (waitErr || acked < this.durability.replicas) {
      this.log.warn(
        { replicas: acked, wanted: this.durability.replicas },
        'publish not confirmed by enough replicas; answering 503',
      );
      throw new RelayError('unavailable', undefined, 1);
    }
    // The replicas hold it, so this node's sockets may have it now, a round
    // trip before its copy would come back.
    if (!idempotent) this.deliverOwn(publication, channels, positions);
    // Fanned out only now. Publishes of one channel from several nodes may
    // arrive out of order this way; the hub orders them by offset, filling
    // from history (which holds everything up to a published offset).
    await this.run(async () => {
      const pipeline = this.cmd.pipeline();
      channels.forEach((c, i) => {
        const text = `${reply[i]}:${payload}`;
        if (this.sharded) pipeline.spublish(this.names.deliver(c), text);
        else pipeline.publish(this.names.deliver(c), text);
      });
      for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err;
    });
    return positions;
  }

  async subscribe(channel: string): Promise<void> {
    this.subscribedChannels.add(channel);
    const name = this.names.deliver(channel);
    await this.run(() =>
      this.sharded ? this.sub.ssubscribe(name) : this.changeSubscription('subscribe', name),
    );
  }

  async unsubscribe(channel: string): Promise<void> {
    this.subscribedChannels.delete(channel);
    this.early.delete(channel);
    const name = this.names.deliver(channel);
    // Queued while Redis is away, so ioredis does not resubscribe it on reconnect.
    await (this.sharded ? this.sub.sunsubscribe(name) : this.changeSubscription('unsubscribe', name)).catch(
      () => {},
    );
  }

  /**
   * Subscribes or unsubscribes a delivery channel together with the other
   * changes of this turn. Channels come and go in bursts (a node's clients
   * reconnecting after a deploy, hundreds of channels lingering out at once),
   * and one command each meant one write each: 500 channels leaving held the
   * event loop for tens of milliseconds. Changes are sent in the order asked,
   * one command per run of the same kind, so an unsubscribe and a subscribe of
   * one channel in the same turn still end subscribed. (Redis Cluster's
   * sharded commands take one slot per command and are sent one by one.)
   */
  private changeSubscription(kind: SubscriptionChange['kind'], name: string): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.subscriptionChanges.length === 0) setImmediate(() => this.sendSubscriptionChanges());
      this.subscriptionChanges.push({ kind, name, resolve, reject });
    });
  }

  private sendSubscriptionChanges(): void {
    const changes = this.subscriptionChanges;
    this.subscriptionChanges = [];
    for (let from = 0; from < changes.length; ) {
      const kind = changes[from]!.kind;
      let to = from + 1;
      while (to < changes.length && changes[to]!.kind === kind && to - from < MAX_SUBSCRIPTION_BATCH) to++;
      const run = changes.slice(from, to);
      const names = run.map((c) => c.name);
      (kind === 'subscribe' ? this.sub.subscribe(...names) : this.sub.unsubscribe(...names)).then(
        () => {
          for (const c of run) c.resolve();
        },
        (err: unknown) => {
          for (const c of run) c.reject(err);
        },
      );
      from = to;
    }
  }

  async positions(channels: readonly string[]): Promise<ChannelTop[]> {
    if (channels.length === 0) return [];
    const replies = await this.run(async () => {
      const results = await runBatch(
        this.cmd,
        channels.map((c) => ({
          key: this.names.meta(c),
          add: (p) =>
            (p as unknown as RelayCommands).relayRead(
              this.names.stream(c),
              this.names.meta(c),
              0,
              0,
              UNBORN_EPOCH,
            ),
        })),
      );
      return results.map(([err, value]) => {
        if (err) throw err;
        return value as ReadReply;
      });
    });
    return replies.map(([epoch, top, , ts]) => ({ epoch, offset: Number(top), lastTs: Number(ts) }));
  }

  async history(channel: string, after: number, limit: number): Promise<HistoryResult> {
    const [epoch, topRaw, raw] = await this.run(() =>
      this.cmd.relayRead(this.names.stream(channel), this.names.meta(channel), after, limit, UNBORN_EPOCH),
    );
    const top = Number(topRaw);
    const minTs = Date.now() - this.retention(channel).ttl * 1000;
    const entries: HistoryEntry[] = [];
    for (const [id, fields] of raw) {
      const entry = parseEntry(channel, epoch, id, fields);
      if (entry.ts >= minTs) entries.push(entry);
    }
    const complete = after === top || (after < top && entries[0]?.offset === after + 1);
    return { epoch, offset: top, entries, complete };
  }

  async idsAt(positions: readonly { channel: string; offset: number }[]): Promise<(string | undefined)[]> {
    if (positions.length === 0) return [];
    const replies = await this.run(async () => {
      const results = await runBatch(
        this.cmd,
        positions.map(({ channel, offset }) => ({
          key: this.names.meta(channel),
          add: (p) =>
            (p as unknown as RelayCommands).relayRead(
              this.names.stream(channel),
              this.names.meta(channel),
              offset - 1,
              1,
              UNBORN_EPOCH,
            ),
        })),
      );
      return results.map(([err, value]) => {
        if (err) throw err;
        return value as ReadReply;
      });
    });
    return replies.map(([epoch, , raw], i) => {
      const { channel, offset } = positions[i]!;
      const first = raw[0];
      if (offset <= 0 || !first) return undefined;
      const entry = parseEntry(channel, epoch, first[0], first[1]);
      if (entry.offset !== offset) return undefined;
      try {
        return decodePublication(entry.text).id;
      } catch {
        return undefined;
      }
    });
  }

  /**
   * With replicas to wait for, asks the master (on the command connection,
   * where publishes wait too) how many replicas hold all it was sent: WAIT
   * answers at once when they are there and after the publish timeout when
   * not. A Redis Cluster's WAIT would go to one master of many: trusted.
   */
  async trustworthy(): Promise<boolean> {
    const { replicas, timeoutMs } = this.durability;
    if (replicas === 0 || this.sharded) return true;
    const acked = await this.run(() => this.cmd.call('WAIT', replicas, timeoutMs));
    return Number(acked) >= replicas;
  }

  async renewEpoch(channel: string, expected: string): Promise<string> {
    return this.run(() =>
      this.cmd.relayRenewEpoch(
        this.names.meta(channel),
        expected,
        this.newEpoch(),
        this.retention(channel).ttl,
      ),
    );
  }

  onDelivery(handler: (delivery: Delivery) => void): void {
    this.deliveryHandler = handler;
  }

  onOwnDelivery(handler: (delivery: Delivery) => boolean): void {
    this.ownHandler = handler;
  }

  onResync(handler: () => void): void {
    this.resyncHandler = handler;
  }

  async close(): Promise<void> {
    this.subscribedChannels.clear();
  }

  private receive(name: string, payload: string): void {
    const channel = this.names.channelOf(name);
    if (channel === undefined || !this.subscribedChannels.has(channel)) return;
    // Anything may be PUBLISHed on a delivery channel: only a well-formed
    // "<offset>:<epoch>:<publication>" goes further, the rest is dropped and counted.
    const first = payload.indexOf(':');
    const second = payload.indexOf(':', first + 1);
    const offset = Number(payload.slice(0, Math.max(0, first)));
    if (first <= 0 || second <= first + 1 || !Number.isSafeInteger(offset) || offset < 1) {
      this.dropped('invalid_position', channel, payload);
      return;
    }
    const early = this.early.get(channel);
    if (early !== undefined && offset <= early.offset && payload.slice(first + 1, second) === early.epoch) {
      // This node's own publish, already delivered from the script's reply.
      if (offset === early.offset) this.early.delete(channel);
      return;
    }
    let message: Delivery['message'];
    try {
      message = decodePublication(payload.slice(second + 1));
    } catch (err) {
      this.dropped(malformedReason(err), channel, payload);
      return;
    }
    this.deliveryHandler({ channel, offset, epoch: payload.slice(first + 1, second), message });
  }

  private newEpoch(): string {
    this.epochCounter = (this.epochCounter + 1) % 1_679_616;
    return `${this.epochSeed}${this.epochCounter.toString(36)}`;
  }

  /** Turns connection failures into a typed 503; a script error is a bug and stays one. */
  private async run<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof Error && /^(ERR|WRONGTYPE|NOSCRIPT)/.test(err.message)) throw err;
      throw new RelayError('unavailable', undefined, 1);
    }
  }
}

/** One publication's share of a counted publish reply: `n` channels from `from`, each its position then its counts hash. */
function shareOf(
  flat: readonly (string | string[])[],
  from: number,
  n: number,
): { positions: Position[]; counts: string[][] } {
  const positions: Position[] = [];
  const counts: string[][] = [];
  for (let j = from; j < from + 2 * n; j += 2) {
    positions.push(parsePosition(flat[j] as string));
    counts.push(flat[j + 1] as string[]);
  }
  return { positions, counts };
}

function parsePosition(text: string): Position {
  const colon = text.indexOf(':');
  return { offset: Number(text.slice(0, colon)), epoch: text.slice(colon + 1) };
}

function parseEntry(channel: string, epoch: string, id: string, fields: string[]): HistoryEntry {
  let ts = 0;
  let text = 'null';
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === 't') ts = Number(fields[i + 1]);
    else if (fields[i] === 'p') text = fields[i + 1]!;
  }
  return { channel, epoch, offset: Number(id.slice(0, id.indexOf('-'))), ts, text };
}
