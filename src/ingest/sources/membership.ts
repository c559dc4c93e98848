import type { Redis } from '../../redis/client.js';
import type { RedisNames } from '../../redis/keys.js';
import { crc32, rendezvous } from './hash.js';

// Which live node handles a raw pub/sub message. Every node receives every
// raw message; each hashes it and only the message's owner (rendezvous
// hashing over the active members) handles it, so the cluster's raw ingest
// grows with its nodes and no node is a single point.
//
// The member set is a sorted set in Redis (node -> expiry, Redis clock) that
// every node renews and reads once a second. Views of it differ between
// nodes for up to a second, and at-most-once must hold through that:
// - A member that goes away (death, expiry, leave) cannot make two nodes
//   handle one message: two nodes that both claim a message must each rank
//   themselves above the other, which agreeing views never allow.
// - A member that arrives could, while the others do not know it yet. So a
//   joining node becomes active only ACTIVATION_DELAY_MS after it joined (by
//   then every node with a fresh view has read it), at a time written in
//   Redis that every node switches at, clock offsets to Redis measured on
//   each read.
// - Around each switch (a member's activation, a removal) every node takes a
//   claim (SET NX) before handling a message, so skew between the nodes'
//   clocks and event loops cannot make two of them handle it.
// - A node whose view is older than FRESH_MS (Redis unreachable, event loop
//   blocked) handles nothing: it may be missing a change. A node past its own
//   expiry (its heartbeats did not get through) handles nothing either: the
//   others have taken its share.

export const HEARTBEAT_MS = 1000;
/** Reads whose round trips are compared to estimate the Redis clock (one a second). */
const OFFSET_SAMPLES = 30;
/** A member that stops renewing is gone this long after its last heartbeat. */
export const MEMBER_TTL_MS = 3000;
/**
 * A view read longer ago than this is not trusted. Generous, because a node
 * whose event loop is busy (a burst, a starved CPU) reads late; its own
 * expiry, not this, is what stops a node the others gave up on.
 */
export const FRESH_MS = 4000;
/**
 * A node joining a non-empty set starts handling its share this long after
 * joining: longer than FRESH_MS plus CLAIM_BEFORE_MS, so every node still
 * handling messages has read the join before the claims around it begin.
 */
export const ACTIVATION_DELAY_MS = 7000;
/** Claims are taken from this long before a scheduled activation... */
export const CLAIM_BEFORE_MS = 2000;
/** ...to this long after it, and this long after a member disappears. */
export const CLAIM_AFTER_MS = 3000;
/**
 * From this long before a member's activation to HANDOVER_AFTER_MS after it,
 * both the member and the node that owned a message without it claim it: a
 * node that receives a message later than another (a busy event loop) may
 * see it on the other side of the switch. Their sum is the lag between two
 * nodes that loses nothing; CLAIM_BEFORE_MS minus HANDOVER_BEFORE_MS is the
 * lag that handles nothing twice (the old owner stops claiming there), as is
 * CLAIM_AFTER_MS minus HANDOVER_AFTER_MS (the member claims until then): 3 s
 * and 1 s. A loaded machine (a CI run beside a browser) delays one node's
 * event loop by more than a second now and then.
 */
export const HANDOVER_BEFORE_MS = 1000;
export const HANDOVER_AFTER_MS = 2000;
/**
 * A node leaving on purpose keeps handling (with claims) this long after
 * leaving the set; it tells the others on a channel, and they read the set
 * again at once (or at their next heartbeat if that message is lost).
 */
export const LEAVE_GRACE_MS = 500;

// KEYS: members (zset node -> expiry), active (hash node -> active-from).
// ARGV: node, mode ('beat' | 'leave' | 'read'), member ttl ms, activation delay ms.
// Returns { now, node, expiry, activeFrom, node, expiry, activeFrom, ... }, times in ms on Redis's clock.
const MEMBERS_LUA = `
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
if ARGV[2] == 'beat' then
  if not redis.call('zscore', KEYS[1], ARGV[1]) then
    local from = now
    if redis.call('zcard', KEYS[1]) > 0 then from = now + tonumber(ARGV[4]) end
    redis.call('hset', KEYS[2], ARGV[1], from)
  end
  redis.call('zadd', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
elseif ARGV[2] == 'leave' then
  redis.call('zrem', KEYS[1], ARGV[1])
  redis.call('hdel', KEYS[2], ARGV[1])
end
for _, f in ipairs(redis.call('hkeys', KEYS[2])) do
  if not redis.call('zscore', KEYS[1], f) then redis.call('hdel', KEYS[2], f) end
end
local list = redis.call('zrange', KEYS[1], 0, -1, 'WITHSCORES')
local out = { tostring(now) }
for i = 1, #list, 2 do
  out[#out + 1] = list[i]
  out[#out + 1] = list[i + 1]
  out[#out + 1] = redis.call('hget', KEYS[2], list[i]) or '0'
end
return out
`;

interface MembersCommand {
  relayIngestMembers(
    members: string,
    active: string,
    node: string,
    mode: 'beat' | 'leave' | 'read',
    ttl: number,
    delay: number,
  ): Promise<string[]>;
}

interface Member {
  readonly id: string;
  readonly seed: number;
  /** Redis-clock ms. */
  readonly expiry: number;
  readonly activeFrom: number;
}

export type Verdict =
  /** This node handles it. */
  | 'mine'
  /** This node handles it if it wins the claim (a membership change is near). */
  | 'claim'
  /** Another node handles it. */
  | 'other'
  /** This node is not an active member with a fresh view: it handles nothing. */
  | 'inactive';

export class IngestMembership {
  private members: Member[] = [];
  /** Redis clock minus local clock, ms: from the recent read with the shortest round trip. */
  private offset = 0;
  /** Half that round trip: how far `offset` may be off, ms. */
  private uncertainty = 0;
  /** Recent reads' round trips and offsets (ms); the shortest round trip is the most accurate. */
  private samples: { rtt: number; offset: number }[] = [];
  /** Local ms of the last successful read. */
  private readAt = Number.NEGATIVE_INFINITY;
  /** Redis-clock ms until which every handled message is claimed first (a member disappeared). */
  private claimUntil = 0;
  /** Local ms until which a leaving node still handles its share, with claims. */
  private leavingUntil: number | undefined;
  private joined = false;
  /** Whether the last decide() fell in a claim window (a membership change is near). */
  claiming = false;
  private readonly cmd: Redis & MembersCommand;

  constructor(
    cmd: Redis,
    private readonly names: RedisNames,
    private readonly nodeId: string,
    private readonly now: () => number = Date.now,
  ) {
    cmd.defineCommand('relayIngestMembers', { numberOfKeys: 2, lua: MEMBERS_LUA });
    this.cmd = cmd as Redis & MembersCommand;
  }

  /** Whether this node is in the set (renewing its heartbeat). */
  get member(): boolean {
    return this.joined;
  }

  /** Live members in this node's view (itself included when it is one). */
  get size(): number {
    const s = this.now() + this.offset;
    return this.members.filter((m) => m.expiry > s).length;
  }

  /**
   * One heartbeat: renews this node (`healthy`: its ingest subscription
   * works) or takes it out of the set, and reads the set.
   */
  async beat(healthy: boolean): Promise<void> {
    if (this.leavingUntil !== undefined) return;
    const mode = healthy ? 'beat' : this.joined ? 'leave' : 'read';
    const sent = this.now();
    const reply = await this.cmd.relayIngestMembers(
      this.names.ingestMembers,
      this.names.ingestActive,
      this.nodeId,
      mode,
      MEMBER_TTL_MS,
      ACTIVATION_DELAY_MS,
    );
    const received = this.now();
    this.joined = mode === 'beat';
    this.adopt(reply, sent, received);
  }

  /**
   * Leaves the set now, but keeps handling this node's share (claiming each
   * message) for LEAVE_GRACE_MS, while the others learn that it left.
   */
  async leave(graceMs = LEAVE_GRACE_MS): Promise<void> {
    if (this.leavingUntil !== undefined) return;
    this.leavingUntil = this.now() + graceMs;
    if (!this.joined) return;
    this.joined = false;
    await this.cmd
      .relayIngestMembers(this.names.ingestMembers, this.names.ingestActive, this.nodeId, 'leave', 0, 0)
      .catch(() => {});
    await this.cmd.publish(this.names.ingestMembersChanged, this.nodeId).catch(() => {});
  }

  /** Who handles a message whose hash is `hash`. */
  decide(hash: number): Verdict {
    const local = this.now();
    this.claiming = false;
    if (local - this.readAt > FRESH_MS) return 'inactive';
    if (this.leavingUntil !== undefined && local >= this.leavingUntil) return 'inactive';
    const s = local + this.offset;
    // Claim windows widen by how far this node's Redis clock may be off, so
    // two nodes' windows around one change always overlap the same messages.
    const u = this.uncertainty;
    const before = CLAIM_BEFORE_MS + u;
    const after = CLAIM_AFTER_MS + u;
    let claim = s < this.claimUntil || this.leavingUntil !== undefined;
    const active: Member[] = [];
    // Made only near an activation: decide() runs for every raw message.
    let switching: Member[] | undefined;
    for (const m of this.members) {
      if (m.expiry <= s) {
        if (s - m.expiry < after) claim = true;
        continue;
      }
      const since = s - m.activeFrom;
      if (since < -before) continue;
      if (since < after) claim = true;
      if (since > -HANDOVER_BEFORE_MS - u && since < HANDOVER_AFTER_MS + u) {
        if (switching === undefined) switching = [m];
        else switching.push(m);
      } else if (since >= 0) active.push(m);
    }
    this.claiming = claim;
    const owner = rendezvous(hash, active);
    const self = this.nodeId;
    // Close to an activation, the nodes receive a message at different times
    // and may disagree on the side of the switch it fell: both the owner
    // without the member and the member (if it would own it) claim it, so one
    // of them handles it, once.
    if (switching !== undefined) {
      const me = switching.find((m) => m.id === self);
      if (me !== undefined && rendezvous(hash, owner === undefined ? [me] : [owner, me]) === me)
        return 'claim';
      if (owner?.id === self) return 'claim';
      return me !== undefined || active.some((m) => m.id === self) ? 'other' : 'inactive';
    }
    if (owner === undefined || !active.some((m) => m.id === self)) return 'inactive';
    if (owner.id !== self) return 'other';
    return claim ? 'claim' : 'mine';
  }

  private adopt(reply: string[], sentAt: number, receivedAt: number): void {
    const now = Number(reply[0]);
    // The script ran somewhere between sending and receiving: the midpoint is
    // off by at most half the round trip. Under load a round trip can take a
    // second, so the recent read with the shortest one is trusted.
    this.samples.push({ rtt: receivedAt - sentAt, offset: now - (sentAt + receivedAt) / 2 });
    if (this.samples.length > OFFSET_SAMPLES) this.samples.shift();
    const best = this.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    this.offset = best.offset;
    this.uncertainty = best.rtt / 2;
    this.readAt = receivedAt;
    this.adoptMembers(reply, now);
  }

  private adoptMembers(reply: string[], now: number): void {
    const next: Member[] = [];
    for (let i = 1; i + 2 < reply.length; i += 3) {
      const id = reply[i]!;
      const old = this.members.find((m) => m.id === id);
      next.push({
        id,
        seed: old?.seed ?? crc32(id),
        expiry: Number(reply[i + 1]),
        activeFrom: Number(reply[i + 2]),
      });
    }
    // A member gone from the set (left, or expired) changes who owns what: claim for a while.
    if (this.members.some((m) => !next.some((n) => n.id === m.id))) this.claimUntil = now + CLAIM_AFTER_MS;
    this.members = next;
  }
}
