import { randomUUID } from 'node:crypto';
import type { PresenceWebhooks } from '../presence/redis.js';
import type { Redis } from '../redis/client.js';
import { isCluster } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import type { QueueLimits } from './memory.js';
import { jsonBytes } from './memory.js';
import type { Claim, DeadLetter, EndpointStats, QueueItem, WebhookQueue, WebhookStats } from './types.js';

// A queued item is one list element: "<hold ms>\n<tag>\n<event JSON>"
// (JSON text never holds a raw newline, user ids and channel names neither).

/**
 * Lua shared by the presence script and the queue's own: pushes one item on
 * a key's queue for an endpoint, or, when `match` names the held item at the
 * queue's tail (not yet due, not being delivered), removes that one instead:
 * the pair cancels out (debounce). `due` (the endpoint's due set) is nil on a
 * Redis Cluster, where it lives in another slot and the node adds the key
 * right after. ZADD LT: a key already due earlier stays due then. `room`
 * (nil: none asked) says whether the item fits the byte bound (and reserves
 * it). Answers 1 pushed, 0 nothing, -1 refused (no room), and the bytes of
 * the event JSON a cancel freed.
 */
export const WEBHOOK_PUSH_LUA = `
local function whPush(q, lease, due, member, now, item, hold, match, push, room)
  if match ~= '' then
    local tail = redis.call('LINDEX', q, -1)
    if tail then
      local th, tt = string.match(tail, '^(%d+)\\n([^\\n]*)\\n')
      if tt == match and tonumber(th) > now and redis.call('EXISTS', lease) == 0 then
        redis.call('RPOP', q)
        return 0, #tail - #th - #tt - 2
      end
    end
  end
  if not push then return 0, 0 end
  if room and not room() then return -1, 0 end
  redis.call('RPUSH', q, item)
  if due then redis.call('ZADD', due, 'LT', math.max(hold, now), member) end
  return 1, 0
end
`;

/**
 * The webhook part of the presence script (see src/presence/redis.ts):
 * every transition its edge() decides is queued for every receiver in the
 * same atomic step, so a node that dies right after a transition cannot lose
 * its event. ARGV[7] '1' turns it on; then ARGV[8] producing node, [9] now
 * (ms), [10] event id base, [11] kinds as ",a,b,", [12] '1' for a presence
 * channel, [13] debounce ms, [14] the channel, [15] receivers, [16] keys per
 * receiver (3: queue, lease, due set; 2 on a Cluster), from KEYS[5], [17]
 * the byte bound.
 *
 * Every event counts against PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES (its JSON's
 * bytes, per receiver). On one Redis the counter is the key after the
 * receivers' and [17] the bound: checked and reserved here, atomically with
 * the transition. On a Cluster the counter is in another slot: [17] is the
 * room the node last saw, and the script answers what it used for the node
 * to add. Past the bound the event is not queued (the transition still
 * happens); a cancel gives its held event's bytes back.
 *
 * Besides edge()'s triples the reply gets {-1, type, receiver index} per
 * refused event and, on a Cluster, {-2, '', bytes} per event (the change to
 * the counter, negative for a cancel), which presenceHook's `replied` reads.
 */
export const WEBHOOK_PRESENCE_LUA = `${WEBHOOK_PUSH_LUA}
local whOn = ARGV[7] == '1'
local whSeq = 0
-- Cluster: bytes this call queued so far, against the room the node gave it.
local whUsed = 0

local function whEvent(etype, user, info)
  local now, holdMs = tonumber(ARGV[9]), tonumber(ARGV[13])
  local tag, match = '', ''
  if etype == 'user.offline' then tag = 'user.online'
  elseif etype == 'channel.vacated' then tag = 'channel.occupied'
  elseif etype == 'member.removed' then tag = 'member.added:' .. user
  elseif etype == 'user.online' or etype == 'channel.occupied' then match = etype
  elseif etype == 'member.added' then match = 'member.added:' .. user end
  local push = string.find(ARGV[11], ',' .. etype .. ',', 1, true) ~= nil
  if not push and match == '' then return end
  local hold = 0
  if tag ~= '' and holdMs > 0 then hold = now + holdMs end
  whSeq = whSeq + 1
  local json = '{"id":' .. cjson.encode(ARGV[10] .. '-' .. whSeq) .. ',"type":"' .. etype .. '","ts":' .. ARGV[9]
    .. ',"node":' .. cjson.encode(ARGV[8])
  if user then json = json .. ',"user":' .. cjson.encode(user) end
  if string.sub(etype, 1, 5) ~= 'user.' then json = json .. ',"channel":' .. cjson.encode(ARGV[14]) end
  if info and info ~= '' and pcall(cjson.decode, info) then json = json .. ',"user_info":' .. info end
  json = json .. '}'
  local item = hold .. '\\n' .. tag .. '\\n' .. json
  local n, stride = tonumber(ARGV[15]), tonumber(ARGV[16])
  local bound, size, counter = tonumber(ARGV[17]), #json, nil
  if stride == 3 then counter = KEYS[5 + n * stride] end
  local net = 0
  local function room()
    if counter then
      if tonumber(redis.call('GET', counter) or '0') + size > bound then return false end
      redis.call('INCRBY', counter, size)
    elseif whUsed + size > bound then
      return false
    end
    return true
  end
  for i = 0, n - 1 do
    local b = 5 + i * stride
    local due = nil
    if stride == 3 then due = KEYS[b + 2] end
    local done, freed = whPush(KEYS[b], KEYS[b + 1], due, ARGV[14], now, item, hold, match, push, room)
    if done == 1 then
      net = net + size
      whUsed = whUsed + size
    end
    if done == -1 then
      out[#out + 1] = -1
      out[#out + 1] = etype
      out[#out + 1] = i
    end
    if freed > 0 then
      net = net - freed
      whUsed = whUsed - freed
      if counter and redis.call('DECRBY', counter, freed) < 0 then redis.call('SET', counter, 0) end
    end
  end
  if not counter and net ~= 0 then
    out[#out + 1] = -2
    out[#out + 1] = ''
    out[#out + 1] = net
  end
end

local function whEdge(join, own, code, user, info)
  if own then
    if join then whEvent('user.online', user, info) else whEvent('user.offline', user, '') end
    return
  end
  if join and code == 3 then whEvent('channel.occupied', nil, '') end
  if ARGV[12] == '1' then
    if join then whEvent('member.added', user, info) else whEvent('member.removed', user, info) end
  end
  if not join and code == 3 then whEvent('channel.vacated', nil, '') end
end
`;

/** KEYS q, lease, state[, due]; ARGV token, lease ms, now, batch. */
const CLAIM_LUA = `
local q, lease, state = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[3])
if not redis.call('SET', lease, ARGV[1], 'NX', 'PX', ARGV[2]) then return {-1, redis.call('PTTL', lease)} end
local nxt = tonumber(redis.call('HGET', state, 'next') or '0')
if nxt > now then redis.call('DEL', lease) return {-2, nxt} end
local items = redis.call('LRANGE', q, 0, tonumber(ARGV[4]) - 1)
if #items == 0 then redis.call('DEL', lease) return {0} end
local out = {1, redis.call('HGET', state, 'n') or '0', redis.call('HGET', state, 'first') or '0'}
for _, item in ipairs(items) do
  local hold = tonumber(string.match(item, '^(%d+)'))
  if hold > now then break end
  out[#out + 1] = item
end
if #out == 3 then
  redis.call('DEL', lease)
  return {-2, tonumber(string.match(items[1], '^(%d+)'))}
end
return out
`;

/** KEYS q, lease, state; ARGV token, count. Answers {-1} without the lease, else {length, head hold}. */
const ACK_LUA = `
local q, lease, state = KEYS[1], KEYS[2], KEYS[3]
if redis.call('GET', lease) ~= ARGV[1] then return {-1} end
redis.call('LTRIM', q, tonumber(ARGV[2]), -1)
redis.call('DEL', state, lease)
local head = redis.call('LINDEX', q, 0)
if not head then return {0, 0} end
return {redis.call('LLEN', q), tonumber(string.match(head, '^(%d+)'))}
`;

/** KEYS q, lease, state; ARGV token, now, next attempt. */
const RETRY_LUA = `
local lease, state = KEYS[2], KEYS[3]
if redis.call('GET', lease) ~= ARGV[1] then return -1 end
redis.call('HINCRBY', state, 'n', 1)
redis.call('HSETNX', state, 'first', ARGV[2])
redis.call('HSET', state, 'next', ARGV[3])
redis.call('DEL', lease)
return 1
`;

/** KEYS q, lease[, due]; ARGV now, item, hold, match, member. Answers whPush's {done, freed}. */
const ENQUEUE_LUA = `${WEBHOOK_PUSH_LUA}
local done, freed = whPush(KEYS[1], KEYS[2], KEYS[3], ARGV[5], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4], true, nil)
return {done, freed}
`;

interface QueueCommands {
  whClaim(...args: (string | number)[]): Promise<(string | number)[]>;
  whAck(...args: (string | number)[]): Promise<number[]>;
  whRetry(...args: (string | number)[]): Promise<number>;
  whEnqueue(...args: (string | number)[]): Promise<[number, number]>;
  whEnqueueDue(...args: (string | number)[]): Promise<[number, number]>;
}

export function encodeItem(item: QueueItem): string {
  return `${item.hold}\n${item.tag}\n${item.json}`;
}

export function decodeItem(raw: string): QueueItem {
  const a = raw.indexOf('\n');
  const b = raw.indexOf('\n', a + 1);
  return { hold: Number(raw.slice(0, a)), tag: raw.slice(a + 1, b), json: raw.slice(b + 1) };
}

/** A sweep runs at most once per this period, cluster-wide. */
export const SWEEP_LOCK_MS = 55_000;

/** A literal in a Redis MATCH pattern. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}

/**
 * On a Redis Cluster a node reads the byte counter again when its copy is
 * older than this, before giving the presence script the room left.
 */
const ROOM_STALE_MS = 250;

/**
 * A node that finds a key leased by another looks at it again after at most
 * this long. Deferring it to the lease's end could outlast the holder's ack
 * (their writes race), leaving events queued behind that delivery waiting for
 * a lease that is long gone.
 */
const HELD_RECHECK_MS = 1000;

/** How long a claim is held: past the delivery timeout, so two nodes never deliver one key at once. */
export function leaseMs(timeoutMs: number): number {
  return timeoutMs + 5000;
}

/**
 * The queues in Redis. Per key and receiver, in the key's hash slot (a
 * channel's, so the presence script can write them): the list of items, the
 * lease of the node delivering it, and its retry state; per receiver a due
 * set (key -> when to look at it next) and a set of keys retrying; the dead
 * letters in one hash and a sorted set by time.
 *
 * The due sets are an index: a key with items always has an entry (its
 * score may be later than needed, never missing), so whoever empties a
 * queue removes the entry and then checks the queue again.
 */
export class RedisWebhookQueue implements WebhookQueue {
  private readonly redis: Redis & QueueCommands;
  private readonly cluster: boolean;
  /**
   * The byte counter as this node last saw it (ms in `seenAt`), from its own
   * changes' answers and reads: what a Cluster's presence script is told is
   * left (the counter is in another slot). `counts`: changes sent so far.
   */
  private seen = 0;
  private seenAt = 0;
  private counts = 0;

  constructor(
    redis: Redis,
    private readonly names: RedisNames,
    private readonly limits: QueueLimits & { readonly leaseMs: number },
  ) {
    redis.defineCommand('whClaim', { numberOfKeys: 3, lua: CLAIM_LUA });
    redis.defineCommand('whAck', { numberOfKeys: 3, lua: ACK_LUA });
    redis.defineCommand('whRetry', { numberOfKeys: 3, lua: RETRY_LUA });
    redis.defineCommand('whEnqueue', { numberOfKeys: 2, lua: ENQUEUE_LUA.replace('KEYS[3]', 'nil') });
    redis.defineCommand('whEnqueueDue', { numberOfKeys: 3, lua: ENQUEUE_LUA });
    this.redis = redis as Redis & QueueCommands;
    this.cluster = isCluster(redis);
  }

  /** Whether the due set can be written in the same script as a queue (not on a Redis Cluster). */
  get atomicDue(): boolean {
    return !this.cluster;
  }

  async enqueue(
    endpoints: readonly string[],
    key: string,
    item: QueueItem | undefined,
    match?: string,
  ): Promise<boolean> {
    // Only undelivered messages come this way (presence events are queued by the presence script).
    if (!item) return true;
    const n = this.names;
    const size = Buffer.byteLength(item.json) * endpoints.length;
    // Reserved before queueing (INCRBY, then given back if over): concurrent
    // enqueues on any node can never pass the bound together.
    if ((await this.count(size)) > this.limits.maxBytes) {
      await this.count(-size);
      return false;
    }
    const now = Date.now();
    const raw = encodeItem(item);
    const one = size / endpoints.length;
    const queued = Promise.all(
      endpoints.map(async (e) => {
        const args = [now, raw, item.hold, match ?? '', key];
        let reply: [number, number];
        if (this.cluster) {
          reply = await this.redis.whEnqueue(n.webhookQueue(key, e), n.webhookLease(key, e), ...args);
          if (reply[0] === 1) await this.redis.zadd(n.webhookDue(e), 'LT', Math.max(item.hold, now), key);
        } else {
          reply = await this.redis.whEnqueueDue(
            n.webhookQueue(key, e),
            n.webhookLease(key, e),
            n.webhookDue(e),
            ...args,
          );
        }
        // A cancel (debounce): neither event stays, nor its bytes.
        if (reply[0] !== 1) await this.release(one + reply[1]);
      }),
    );
    try {
      await queued;
    } catch (err) {
      await this.release(size).catch(() => {});
      throw err;
    }
    return true;
  }

  /**
   * What the Redis presence driver needs to queue each transition's events
   * for these receivers in its script. `refused` hears of each event the
   * byte bound kept out (the receiver's index in `receivers`), before the
   * driver emits the transition's events.
   */
  presenceHook(
    receivers: readonly string[],
    kinds: readonly string[],
    debounceMs: number,
    nextId: () => string,
    refused: (type: string, key: string, receiver: number) => void,
  ): PresenceWebhooks {
    const n = this.names;
    const atomic = !this.cluster;
    const max = this.limits.maxBytes;
    // Cluster: the counter as this node last saw it (see `seen`), read
    // again when older than ROOM_STALE_MS.
    let reading: Promise<void> | undefined;
    const read = (): Promise<void> | undefined => {
      if (reading || Date.now() - this.seenAt < ROOM_STALE_MS) return reading;
      const before = this.counts;
      reading = this.redis
        .get(n.webhookBytes)
        .then((v) => {
          // A change sent meanwhile answers a newer figure.
          if (this.counts === before) this.saw(Number(v ?? 0));
        })
        .catch(() => {})
        .finally(() => {
          reading = undefined;
        });
      return reading;
    };
    const add = (bytes: number) => {
      this.seen += bytes;
      this.count(bytes)
        // Bytes of items queued before every event was counted, given back.
        .then((total) => (total < 0 ? this.redis.set(n.webhookBytes, 0) : undefined))
        .catch(() => {});
    };
    return {
      receivers: receivers.length,
      stride: atomic ? 3 : 2,
      keyCount: receivers.length * (atomic ? 3 : 2) + (atomic ? 1 : 0),
      kinds: `,${kinds.join(',')},`,
      debounceMs,
      nextId,
      keys: (channel) => {
        const keys = receivers.flatMap((r) =>
          atomic
            ? [n.webhookQueue(channel, r), n.webhookLease(channel, r), n.webhookDue(r)]
            : [n.webhookQueue(channel, r), n.webhookLease(channel, r)],
        );
        if (atomic) keys.push(n.webhookBytes);
        return keys;
      },
      fresh: () => {
        if (atomic) return undefined;
        const wait = read();
        // Far from the bound a figure a moment old does; near it, an old one
        // could refuse events the deliveries since have made room for.
        return this.seen > max / 2 ? wait : undefined;
      },
      bound: () => (atomic ? max : Math.max(0, max - this.seen)),
      replied: (channel, reply, from) => {
        let bytes = 0;
        for (let i = from; i + 2 < reply.length; i += 3) {
          const code = Number(reply[i]);
          if (code === -1) refused(String(reply[i + 1]), channel, Number(reply[i + 2]));
          else if (code === -2) bytes += Number(reply[i + 2]);
        }
        if (bytes !== 0) add(bytes);
      },
    };
  }

  /** After the presence script queued events on a Cluster: the due sets it could not write. */
  async markDue(endpoints: readonly string[], key: string): Promise<void> {
    const now = Date.now();
    await Promise.all(endpoints.map((e) => this.redis.zadd(this.names.webhookDue(e), 'LT', now, key)));
  }

  async claim(endpoint: string, now: number, keys: number, batch: number): Promise<Claim[]> {
    const n = this.names;
    const due = n.webhookDue(endpoint);
    const candidates = await this.redis.zrangebyscore(due, '-inf', now, 'LIMIT', 0, keys);
    const out: Claim[] = [];
    await Promise.all(
      candidates.map(async (key) => {
        const token = randomUUID();
        const reply = await this.redis.whClaim(
          n.webhookQueue(key, endpoint),
          n.webhookLease(key, endpoint),
          n.webhookState(key, endpoint),
          token,
          this.limits.leaseMs,
          now,
          batch,
        );
        const status = Number(reply[0]);
        if (status === 1) {
          // Out of the others' way while this node holds it.
          await this.redis.zadd(due, 'XX', now + this.limits.leaseMs, key);
          out.push({
            endpoint,
            key,
            items: (reply.slice(3) as string[]).map(decodeItem),
            attempts: Number(reply[1]),
            firstFailure: Number(reply[2]),
            token,
          });
        } else if (status === 0) {
          await this.settle(endpoint, key);
        } else if (status === -1) {
          // Held by another node: looked at again soon, not when its lease ends. This write
          // can land after the holder's ack set the key due at once (another round trip, and on
          // a Cluster another slot), so what it defers must stay short.
          const wait = Math.min(Math.max(0, Number(reply[1])), HELD_RECHECK_MS);
          await this.redis.zadd(due, 'XX', 'GT', now + wait, key);
        } else {
          await this.redis.zadd(due, 'XX', Number(reply[1]), key);
        }
      }),
    );
    return out;
  }

  async ack(claim: Claim): Promise<void> {
    const n = this.names;
    const { endpoint, key } = claim;
    const [length, hold] = await this.redis.whAck(
      n.webhookQueue(key, endpoint),
      n.webhookLease(key, endpoint),
      n.webhookState(key, endpoint),
      claim.token,
      claim.items.length,
    );
    if (length === -1) return; // the lease was lost: whoever holds it now acks these
    const bytes = jsonBytes(claim.items);
    await Promise.all([
      bytes > 0 ? this.release(bytes) : undefined,
      claim.attempts > 0 ? this.redis.zrem(n.webhookRetrying(endpoint), key) : undefined,
      length! > 0
        ? this.redis.zadd(n.webhookDue(endpoint), Math.max(hold!, Date.now()), key)
        : this.settle(endpoint, key),
    ]);
  }

  async retry(claim: Claim, at: number): Promise<void> {
    const n = this.names;
    const { endpoint, key } = claim;
    const ok = await this.redis.whRetry(
      n.webhookQueue(key, endpoint),
      n.webhookLease(key, endpoint),
      n.webhookState(key, endpoint),
      claim.token,
      Date.now(),
      at,
    );
    if (ok !== 1) return;
    await Promise.all([
      this.redis.zadd(n.webhookDue(endpoint), at, key),
      this.redis.zadd(n.webhookRetrying(endpoint), at, key),
    ]);
  }

  async bury(claim: Claim, reason: string): Promise<void> {
    const n = this.names;
    const id = randomUUID();
    const ts = Date.now();
    const letter: DeadLetter = {
      id,
      endpoint: claim.endpoint,
      key: claim.key,
      ts,
      attempts: claim.attempts + 1,
      reason,
      items: claim.items,
    };
    // Written before the queue lets go of them: a crash in between leaves a
    // dead letter and the events still queued (delivered again), never neither.
    await this.redis.hset(n.webhookDead, id, JSON.stringify(letter));
    await this.redis.zadd(n.webhookDeadIds, ts, id);
    const over = (await this.redis.zcard(n.webhookDeadIds)) - this.limits.maxDeadLetters;
    if (over > 0) {
      const oldest = await this.redis.zpopmin(n.webhookDeadIds, over);
      const ids = oldest.filter((_, i) => i % 2 === 0);
      if (ids.length > 0) await this.redis.hdel(n.webhookDead, ...ids);
    }
    await this.ack(claim);
  }

  async stats(endpoints: readonly string[]): Promise<WebhookStats> {
    const n = this.names;
    const [bytes, dead, ...counts] = await Promise.all([
      this.redis.get(n.webhookBytes),
      this.redis.zcard(n.webhookDeadIds),
      ...endpoints.flatMap((e) => [
        this.redis.zcard(n.webhookDue(e)),
        this.redis.zcard(n.webhookRetrying(e)),
      ]),
    ]);
    const out: Record<string, EndpointStats> = {};
    endpoints.forEach((e, i) => {
      out[e] = { depth: Number(counts[2 * i]), retrying: Number(counts[2 * i + 1]) };
    });
    return { endpoints: out, bytes: Math.max(0, Number(bytes ?? 0)), deadLetters: Number(dead) };
  }

  async deadLetters(offset: number, limit: number): Promise<{ total: number; items: DeadLetter[] }> {
    const n = this.names;
    const [total, ids] = await Promise.all([
      this.redis.zcard(n.webhookDeadIds),
      this.redis.zrevrange(n.webhookDeadIds, offset, offset + limit - 1),
    ]);
    if (ids.length === 0) return { total, items: [] };
    const raw = await this.redis.hmget(n.webhookDead, ...ids);
    return {
      total,
      items: raw.filter((r): r is string => r !== null).map((r) => JSON.parse(r) as DeadLetter),
    };
  }

  async retryDead(id: string): Promise<boolean> {
    const n = this.names;
    const raw = await this.redis.hget(n.webhookDead, id);
    // HDEL decides which of two concurrent retries gets it.
    if (raw === null || (await this.redis.hdel(n.webhookDead, id)) === 0) return false;
    await this.redis.zrem(n.webhookDeadIds, id);
    const letter = JSON.parse(raw) as DeadLetter;
    for (const item of letter.items) {
      await this.pushRaw(letter.endpoint, letter.key, { ...item, hold: 0 });
    }
    const bytes = jsonBytes(letter.items);
    if (bytes > 0) await this.count(bytes);
    return true;
  }

  async discardDead(id: string): Promise<boolean> {
    const n = this.names;
    const removed = await this.redis.hdel(n.webhookDead, id);
    await this.redis.zrem(n.webhookDeadIds, id);
    return removed === 1;
  }

  private async pushRaw(endpoint: string, key: string, item: QueueItem): Promise<void> {
    const n = this.names;
    await this.redis.rpush(n.webhookQueue(key, endpoint), encodeItem(item));
    await this.redis.zadd(n.webhookDue(endpoint), 'LT', Date.now(), key);
  }

  /**
   * On a Redis Cluster the presence script cannot write the due sets (another
   * slot): a node dying between its script and its ZADD leaves a queue no due
   * set names. This finds such queues on every master and indexes them again
   * (ZADD NX: a key already indexed keeps its time). One node at a time (a
   * lock); answers the queues it indexed again.
   */
  async sweep(endpoints: readonly string[]): Promise<number> {
    const redis = this.redis;
    if (!isCluster(redis)) return 0;
    const n = this.names;
    if ((await this.redis.set(n.webhookSweep, '1', 'PX', SWEEP_LOCK_MS, 'NX')) !== 'OK') return 0;
    const known = new Set(endpoints);
    const head = `${n.prefix}:{`;
    const tail = '}:wq:';
    let fixed = 0;
    for (const master of redis.nodes('master')) {
      let cursor = '0';
      do {
        const [next, keys] = await master.scan(
          cursor,
          'MATCH',
          `${globEscape(n.prefix)}:{*}:wq:*`,
          'COUNT',
          1000,
        );
        cursor = next;
        for (const k of keys) {
          const at = k.lastIndexOf(tail);
          if (!k.startsWith(head) || at < 0) continue;
          const key = k.slice(head.length, at);
          const endpoint = k.slice(at + tail.length);
          if (!known.has(endpoint)) continue;
          fixed += Number(await this.redis.zadd(n.webhookDue(endpoint), 'NX', Date.now(), key));
        }
      } while (cursor !== '0');
    }
    return fixed;
  }

  /** Takes acknowledged bytes off the count; a count a crash left short never goes below 0. */
  private async release(bytes: number): Promise<void> {
    if ((await this.count(-bytes)) < 0) {
      await this.redis.set(this.names.webhookBytes, 0);
    }
  }

  /** Changes the byte counter; its answer is the figure this node saw last. */
  private async count(delta: number): Promise<number> {
    this.counts++;
    const total = await this.redis.incrby(this.names.webhookBytes, delta);
    this.saw(total);
    return total;
  }

  private saw(total: number): void {
    this.seen = Math.max(0, total);
    this.seenAt = Date.now();
  }

  /** A key found empty: out of the due set, unless an item arrived meanwhile. */
  private async settle(endpoint: string, key: string): Promise<void> {
    const n = this.names;
    await this.redis.zrem(n.webhookDue(endpoint), key);
    if ((await this.redis.llen(n.webhookQueue(key, endpoint))) > 0) {
      await this.redis.zadd(n.webhookDue(endpoint), Date.now(), key);
    }
  }
}
