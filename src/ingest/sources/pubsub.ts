import { createHash } from 'node:crypto';
import type { Counter } from 'prom-client';
import { isRelayError } from '../../errors.js';
import type { Redis } from '../../redis/client.js';
import type { RedisNames } from '../../redis/keys.js';
import type { PublishSource } from '../ingest.js';
import { decodeUtf8 } from '../json.js';
import { crc32 } from './hash.js';
import { HEARTBEAT_MS, IngestMembership, LEAVE_GRACE_MS } from './membership.js';
import { sample } from './throttled-log.js';
import { type Decoded, reportRefusal, type SourceContext } from './types.js';

// The machinery every pub/sub source shares (raw `PUBLISH <prefix>:publish`,
// ActionCable, AnyCable, Laravel): one subscriber connection per node for all
// their channels and patterns, ownership so each message is handled by one
// live node, refusals counted and logged (throttled), and a bound on how many
// messages a node handles at once. A source only says what to subscribe to
// and how to turn a message into publish bodies.

/** A node whose probe has not come back for this long treats its subscription as broken. */
const PROBE_FRESH_MS = 2500;
/** With the subscription broken this long, the SUBSCRIBEs are sent again. */
const RESUBSCRIBE_AFTER_MS = 5000;
/** How long a claim taken around a membership change is kept; longer than any claim window. */
const CLAIM_TTL_MS = 10_000;
/** How long stop() waits for messages being handled. */
const STOP_WAIT_MS = 1000;
/** Raw messages one node publishes at once; the rest wait in its queue. */
const CONCURRENCY = 64;

export interface PubSubRoute {
  /** Metrics label and idempotency scope. */
  readonly source: PublishSource;
  /** SUBSCRIBEd channel... */
  readonly channel?: string;
  /** ...or PSUBSCRIBEd pattern. */
  readonly pattern?: string;
  /** For a pattern: whether a channel it matched is this route's. Others are skipped unseen. */
  readonly accepts?: (channel: string) => boolean;
  /** Turns one message into what to do; never throws (a malformed message is a `refuse`). */
  decode(channel: string, payload: string): Decoded[];
  /**
   * Whose messages one node takes: `channel` (every message of a Redis channel
   * goes to the same node, so a stream's messages keep their order, as
   * ActionCable's and Laravel's channels name one stream each), or `message`
   * (default: spread message by message, for channels many streams share).
   */
  readonly ownBy?: 'channel' | 'message';
}

type Outcome = 'published' | 'not_owner' | 'claimed_elsewhere' | 'dropped' | 'failed' | 'ignored';

interface Bound {
  readonly route: PubSubRoute;
  readonly counters: Record<Outcome, Counter.Internal>;
}

export interface PubSubDeps {
  readonly command: Redis;
  /** The 'ingest' role connection: subscribes, nothing else. */
  readonly subscriber: Redis;
  readonly names: RedisNames;
  readonly nodeId: string;
  readonly ctx: SourceContext;
  /** Messages this node handles at once; past it, new ones are dropped and counted. */
  readonly maxInflight: number;
}

export class PubSubIngest {
  readonly membership: IngestMembership;
  private readonly exact = new Map<string, Bound>();
  private readonly patterns = new Map<string, Bound>();
  private readonly probeChannel: string;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  /** Another round was asked for while one was running. */
  private again = false;
  private stopped = false;
  /** Messages queued or being handled. */
  private inflight = 0;
  /** Messages being handled. */
  private running = 0;
  private queue: { bound: Bound; channel: string; payload: Buffer; claim: string | undefined }[] = [];
  /**
   * Claimed messages seen lately, by digest: the n-th identical message in a
   * claim window claims `<digest>.<n>`, so two identical publishes are two
   * messages (every node sees them in the same order), not one collapsed.
   */
  private readonly occurrences = new Map<string, { n: number; at: number }>();
  /** Index of the queue's first message (a FIFO without Array.shift's copying). */
  private head = 0;
  private probeSeq = 0;
  private probeBackAt = Number.NEGATIVE_INFINITY;
  private subscribedAt = 0;
  private started = false;

  constructor(private readonly deps: PubSubDeps) {
    this.membership = new IngestMembership(deps.command, deps.names, deps.nodeId);
    this.probeChannel = deps.names.ingestProbe(deps.nodeId);
    // The Buffer events: nothing is decoded for the messages another node handles.
    deps.subscriber.on('messageBuffer', (channel: Buffer, message: Buffer) =>
      this.receive(channel.toString(), undefined, message),
    );
    deps.subscriber.on('pmessageBuffer', (pattern: Buffer | string, channel: Buffer, message: Buffer) =>
      this.receive(channel.toString(), pattern.toString(), message),
    );
  }

  /** Adds a source's channel or pattern; before start(). */
  route(route: PubSubRoute): void {
    if (this.started) throw new Error('routes are added before start()');
    const { metrics } = this.deps.ctx;
    const outcomes: Outcome[] = [
      'published',
      'not_owner',
      'claimed_elsewhere',
      'dropped',
      'failed',
      'ignored',
    ];
    const counters = Object.fromEntries(
      outcomes.map((o) => [o, metrics.ingestMessages.labels({ source: route.source, outcome: o })]),
    ) as Bound['counters'];
    const bound = { route, counters };
    if (route.channel !== undefined) this.exact.set(route.channel, bound);
    else if (route.pattern !== undefined) this.patterns.set(route.pattern, bound);
    else throw new Error(`route of ${route.source} names neither a channel nor a pattern`);
  }

  async start(): Promise<void> {
    this.started = true;
    this.subscribe();
    void this.probe();
    this.timer = setInterval(() => void this.tick(), HEARTBEAT_MS);
    this.timer.unref();
  }

  /** Leaves the member set now; keeps handling its share briefly while the others learn it. */
  async drain(): Promise<void> {
    await this.membership.leave();
  }

  async stop(): Promise<void> {
    this.stopping ??= this.halt();
    await this.stopping;
  }

  private stopping: Promise<void> | undefined;

  private async halt(): Promise<void> {
    // Alone, there is nobody to hand over to.
    const grace = this.membership.member && this.membership.size > 1 ? LEAVE_GRACE_MS : 0;
    await this.membership.leave(grace);
    if (grace > 0) await new Promise((r) => setTimeout(r, grace));
    this.stopped = true;
    clearInterval(this.timer);
    const { subscriber, names } = this.deps;
    // Named explicitly: ioredis never settles an argument-less UNSUBSCRIBE while patterns remain.
    const unsubscribed = Promise.all([
      subscriber
        .unsubscribe(...this.exact.keys(), this.probeChannel, names.ingestMembersChanged)
        .catch(() => {}),
      this.patterns.size > 0 ? subscriber.punsubscribe(...this.patterns.keys()).catch(() => {}) : undefined,
    ]);
    await Promise.race([unsubscribed, new Promise((r) => setTimeout(r, STOP_WAIT_MS))]);
    const deadline = Date.now() + STOP_WAIT_MS;
    while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  private subscribe(): void {
    const { subscriber, ctx } = this.deps;
    this.subscribedAt = Date.now();
    // Queued while Redis is away; ioredis resubscribes by itself after a reconnect.
    const failed = (err: Error) => ctx.log.warn({ err: err.message }, 'ingest SUBSCRIBE failed; retrying');
    subscriber
      .subscribe(...this.exact.keys(), this.probeChannel, this.deps.names.ingestMembersChanged)
      .catch(failed);
    if (this.patterns.size > 0) subscriber.psubscribe(...this.patterns.keys()).catch(failed);
  }

  /** Sends this node a message through Redis: when it comes back, the subscription works end to end. */
  private async probe(): Promise<void> {
    await this.deps.command.publish(this.probeChannel, String(++this.probeSeq)).catch(() => {});
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    this.ticking = true;
    try {
      const healthy = Date.now() - this.probeBackAt < PROBE_FRESH_MS;
      if (!healthy && Date.now() - this.subscribedAt > RESUBSCRIBE_AFTER_MS) this.subscribe();
      await this.membership.beat(healthy).catch(() => {});
      this.deps.ctx.metrics.ingestMembers.set(this.membership.member ? this.membership.size : 0);
      void this.probe();
    } finally {
      this.ticking = false;
    }
    if (this.again) {
      this.again = false;
      await this.tick();
    }
  }

  private receive(channel: string, pattern: string | undefined, payload: Buffer): void {
    if (channel === this.probeChannel) {
      const first = this.probeBackAt === Number.NEGATIVE_INFINITY;
      this.probeBackAt = Date.now();
      // Join at once rather than at the next heartbeat.
      if (first) void this.tick();
      return;
    }
    if (channel === this.deps.names.ingestMembersChanged) {
      if (payload.toString() !== this.deps.nodeId) void this.tick();
      return;
    }
    const bound = pattern === undefined ? this.exact.get(channel) : this.patterns.get(pattern);
    if (bound === undefined) return;
    // A pattern may match the relay's own channels (deliveries, probes): never its business.
    if (pattern !== undefined) {
      if (channel.startsWith(`${this.deps.names.prefix}:`) || !(bound.route.accepts?.(channel) ?? true))
        return;
    }
    const verdict = this.membership.decide(
      bound.route.ownBy === 'channel' ? crc32(channel) : crc32(payload, crc32(channel)),
    );
    if (verdict === 'other') {
      // Counted all the same, so every node numbers identical messages alike around a change.
      if (this.membership.claiming) this.claimKey(channel, payload);
      bound.counters.not_owner.inc();
      return;
    }
    if (verdict === 'inactive') {
      bound.counters.dropped.inc();
      return;
    }
    if (this.inflight >= this.deps.maxInflight) {
      bound.counters.dropped.inc();
      this.deps.ctx.refusals.warn(
        bound.route.source,
        'overloaded',
        { inflight: this.inflight },
        'dropped a raw ingest message: PUSHRELAY_INGEST_MAX_INFLIGHT messages are queued or being handled',
      );
      return;
    }
    // Decided now (every node decides on receipt, with views that agree);
    // handled as a slot frees up. A decision stays right however late the
    // message is handled: the other nodes decided on receipt too.
    this.inflight++;
    this.queue.push({
      bound,
      channel,
      payload,
      claim: verdict === 'claim' ? this.claimKey(channel, payload) : undefined,
    });
    this.drainQueue();
  }

  /**
   * Starts queued messages while fewer than CONCURRENCY are being handled. A
   * burst is absorbed by the queue (bounded by PUSHRELAY_INGEST_MAX_INFLIGHT)
   * rather than by thousands of publishes at once, which would starve the
   * heartbeat and turn the node inactive (handling nothing) until it caught up.
   */
  private drainQueue(): void {
    while (this.running < CONCURRENCY && this.head < this.queue.length) {
      const next = this.queue[this.head++]!;
      if (this.head === this.queue.length) {
        this.queue = [];
        this.head = 0;
      } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      this.running++;
      void this.handle(next.bound, next.channel, next.payload, next.claim).finally(() => {
        this.running--;
        this.inflight--;
        this.drainQueue();
      });
    }
  }

  /** The claim of this occurrence of a message, counted on receipt (in the order Redis delivers). */
  private claimKey(channel: string, payload: Buffer): string {
    const digest = createHash('sha1').update(channel).update('\n').update(payload).digest('base64url');
    const now = Date.now();
    // The map is kept in time order (an entry seen again moves to the end), so
    // the expired ones are at its head: dropping them stops at the first live one.
    for (const [d, o] of this.occurrences) {
      if (now - o.at < CLAIM_TTL_MS && this.occurrences.size < 65_536) break;
      // Bounded in a burst too: the oldest go first (a repeat of one of them may then collapse).
      this.occurrences.delete(d);
    }
    const seen = this.occurrences.get(digest);
    const n = seen !== undefined && now - seen.at < CLAIM_TTL_MS ? seen.n + 1 : 1;
    this.occurrences.delete(digest);
    this.occurrences.set(digest, { n, at: now });
    return `${digest}.${n}`;
  }

  private async handle(
    bound: Bound,
    channel: string,
    payload: Buffer,
    claim: string | undefined,
  ): Promise<void> {
    const { command, names, nodeId, ctx } = this.deps;
    const { route, counters } = bound;
    if (claim !== undefined) {
      let won: string | null;
      try {
        won = await command.set(names.ingestClaim(claim), nodeId, 'PX', CLAIM_TTL_MS, 'NX');
      } catch {
        counters.failed.inc();
        return;
      }
      if (won !== 'OK') {
        counters.claimed_elsewhere.inc();
        return;
      }
    }
    const where = { channel };
    if (payload.length > ctx.maxPayloadBytes) {
      const detail = `the message is ${payload.length} bytes; the limit is ${ctx.maxPayloadBytes} (PUSHRELAY_MAX_PAYLOAD_BYTES)`;
      reportRefusal(
        ctx,
        route.source,
        'payload_too_large',
        detail,
        where,
        sample(payload.toString('latin1')),
      );
      return;
    }
    let text: string;
    try {
      text = decodeUtf8(payload);
    } catch {
      reportRefusal(
        ctx,
        route.source,
        'invalid_encoding',
        'not UTF-8',
        where,
        sample(payload.toString('latin1')),
      );
      return;
    }
    // Published one after another: the parts of one message (an AnyCable batch) keep their order.
    for (const item of route.decode(channel, text)) await this.apply(bound, item, where, text);
  }

  private async apply(
    bound: Bound,
    item: Decoded,
    where: Record<string, unknown>,
    text: string,
  ): Promise<void> {
    const { ctx } = this.deps;
    const { route, counters } = bound;
    if (item.kind === 'ignore') {
      counters.ignored.inc();
      ctx.metrics.ingestIgnored.inc({ source: route.source, reason: item.reason });
      return;
    }
    if (item.kind === 'refuse') {
      reportRefusal(ctx, route.source, item.reason, item.detail, where, sample(text));
      return;
    }
    try {
      await ctx.ingest.publish(item.body, route.source, item.options ?? { scope: route.source });
      counters.published.inc();
    } catch (err) {
      if (isRelayError(err) && err.code !== 'unavailable') {
        reportRefusal(ctx, route.source, err.code, err.message, where, sample(text));
        return;
      }
      counters.failed.inc();
      ctx.refusals.warn(
        route.source,
        'unavailable',
        { ...where, err: err instanceof Error ? err.message : String(err) },
        'could not publish a raw ingest message (it is lost: pub/sub is at most once)',
      );
    }
  }
}
