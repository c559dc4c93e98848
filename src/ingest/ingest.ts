import { createHash, randomUUID } from 'node:crypto';
import type { Broker } from '../broker/index.js';
import { isRelayError, RelayError } from '../errors.js';
import type { Metrics } from '../metrics/index.js';
import type { Presence } from '../presence/index.js';
import {
  assertClientChannel,
  assertEventName,
  assertUserId,
  BROADCAST_CHANNEL,
  type Position,
  type Publication,
  userChannel,
} from './message.js';
import type { ResultStore, StoredResult } from './results.js';
import type { PublishBody } from './schema.js';

const NONE: readonly string[] = [];

/** The list without repeats, in first-seen order; short lists (the usual one user) without a Set. */
function unique(list: readonly string[] | undefined): readonly string[] {
  if (list === undefined || list.length === 0) return NONE;
  if (list.length === 1) return list;
  if (list.length === 2) return list[0] === list[1] ? [list[0]!] : list;
  return [...new Set(list)];
}

/** What a Socket.IO socket id looks like (base64url, 20 characters); anything else names no socket and is dropped. */
const SOCKET_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

export type PublishSource =
  | 'http'
  | 'batch'
  | 'legacy'
  | 'socket'
  /** `PUBLISH <prefix>:publish` (raw pub/sub). */
  | 'redis'
  /** `XADD <prefix>:publish` (the durable ingest stream). */
  | 'stream'
  | 'actioncable'
  | 'anycable'
  /** Laravel's Redis broadcaster (`PUSHRELAY_ECHO_REDIS_PREFIX`). */
  | 'laravel'
  /** laravel-echo-server's HTTP API (`POST /apps/:appId/events`) and Echo whispers. */
  | 'echo';

/** How a source asks for a publish to be handled. */
export interface PublishOptions {
  /**
   * Idempotency scope: an `id` is remembered per scope, so two sources, two
   * publisher keys (HTTP uses `key:<name>`), or two parts of one split
   * publish using the same id do not answer for, or suppress, each other.
   */
  readonly scope?: string;
  /**
   * Users whose presence decides `online` / `offline` and the offline
   * fallback, instead of `users`. A source that splits one publish into parts
   * (the ingest stream, per partition) gives the whole list to one part and
   * an empty one to the others, so the offline fallback runs once per publish.
   */
  readonly audience?: readonly string[];
  /** Socket ids that must not receive the message, wherever they are connected (Laravel's `toOthers()`). */
  readonly exceptSockets?: readonly string[];
}

export interface PublishResult {
  /** The message id: the publisher's idempotency `id` when it sent one. */
  id: string;
  /** Targeted users (from `users`) with at least one socket, and sockets the message reached, cluster-wide. */
  online: { users: number; sockets: number };
  /** Users from `users` that had no socket anywhere. */
  offline: string[];
  /** History position the message got in each channel it went to. */
  channels: Record<string, Position>;
}

export type PublishOutcome = { ok: true; result: PublishResult } | { ok: false; error: RelayError };

/** A validated publish, ready to be written. */
interface Plan {
  readonly body: PublishBody;
  readonly users: readonly string[];
  readonly channels: readonly string[];
  readonly broadcast: boolean;
  readonly except: readonly string[];
  readonly data: string;
  /** Users counted for online/offline (see PublishOptions.audience). */
  readonly audience: readonly string[];
  /** Key of this publish's answer in the result store (its id, in its scope). */
  readonly resultKey: string | undefined;
  /** Digest of what the publish asks for (event, data, targets), kept with its answer: a repeat of its id must match it. */
  readonly digest: string;
  readonly exceptSockets: readonly string[];
  /** Whether every channel its answer counts is one of its targets (not a broadcast, no separate audience). */
  readonly countsTargets: boolean;
}

export interface IngestDeps {
  readonly broker: Broker;
  readonly presence: Presence;
  readonly results: ResultStore;
  readonly metrics: Metrics;
  readonly maxPayloadBytes: number;
  /** Told about targeted users that had no socket online (offline fallback). */
  readonly onOffline?: (users: readonly string[], publication: Publication) => void;
}

/**
 * The one path every publish takes, whatever it came from (HTTP, batch,
 * legacy routes, the Redis ingest channel, a client): validate, then append
 * to history and fan out in one broker step, then answer with positions and
 * who was online. A publish is acknowledged only after the broker holds it.
 */
export class Ingest {
  constructor(private readonly deps: IngestDeps) {}

  /** The broker answered that it cannot write and count one publish in one step here. */
  private countedUnavailable = false;

  async publish(
    body: PublishBody,
    source: PublishSource,
    options: PublishOptions = {},
  ): Promise<PublishResult> {
    // The cluster's usual publish, in one step; it counts its own outcomes.
    const counted = this.publishCounted(body, source, options);
    if (counted !== undefined) return counted;
    const started = performance.now();
    try {
      const [result] = await this.executeMany([this.plan(body, options)], source);
      this.deps.metrics.publishDuration.observe({ source }, (performance.now() - started) / 1000);
      return result!;
    } catch (err) {
      this.failed(source, err);
    }
  }

  /**
   * publish() answered in the calling turn, or undefined (having done
   * nothing) where some step would wait: a broker or presence outside this
   * process, an idempotency `id` to look up, a broadcast (its count asks
   * every node). Standalone, an ordinary publish then takes no promise, no
   * batch bookkeeping and no second parse of its data. Same checks, writes,
   * answer, metrics and offline fallback as publish(); a RelayError from the
   * checks is thrown as publish() rejects with it. `body` must have been
   * parsed from JSON text: its `data` is delivered as it is, which sends the
   * same bytes as its JSON only for plain JSON values (a value a Socket.IO
   * client sent may hold binary attachments, so those sources use publish()).
   */
  publishNow(
    body: PublishBody,
    source: PublishSource,
    options: PublishOptions = {},
  ): PublishResult | undefined {
    const { broker, presence } = this.deps;
    if (broker.publishNow === undefined || presence.countNow === undefined || !single(body, options)) {
      return undefined;
    }
    const started = performance.now();
    try {
      const plan = this.plan(body, options);
      const publication = publicationOf(plan);
      const { users } = plan;
      const targets = targetsOf(plan);
      const positions = broker.publishNow(publication, targets, false, undefined, dataValue(body));
      // Counted after the fan-out, as publish() does. The targets are exactly
      // the channels publish() counts here (no audience, no broadcast), each
      // once: users are unique, channels too and never in the user namespace.
      const { online, offline } = reachOf(users, targets, presence.countNow(targets));
      const channels = positionsByChannel(targets, positions);
      return this.answered(source, started, publication, { id: publication.id, online, offline, channels });
    } catch (err) {
      this.failed(source, err);
    }
  }

  /**
   * publish() in a cluster, for the publishes publishNow() takes standalone
   * (no idempotency `id`, not a broadcast, no audience): the write and the
   * count in the broker's one step, answered through that step's promise
   * without executeMany's batch bookkeeping (arrays per item, a Set and a Map
   * of channels, closures). Undefined, having done nothing, where the broker
   * or presence cannot do that step. Same checks, writes, answer, metrics and
   * offline fallback as publish(); a RelayError from the checks is thrown, as
   * publishNow() does, and outcomes are counted here.
   */
  publishCounted(
    body: PublishBody,
    source: PublishSource,
    options: PublishOptions = {},
  ): Promise<PublishResult> | undefined {
    const { broker, presence } = this.deps;
    if (
      broker.publishCounted === undefined ||
      this.countedUnavailable ||
      presence.countFrom === undefined ||
      !single(body, options)
    ) {
      return undefined;
    }
    const started = performance.now();
    let plan: Plan;
    try {
      plan = this.plan(body, options);
    } catch (err) {
      this.failed(source, err);
    }
    const publication = publicationOf(plan);
    const targets = targetsOf(plan);
    const written = broker.publishCounted(publication, targets, dataValue(body));
    if (written === undefined) {
      // The deployment cannot (Redis Cluster, waiting for replicas): not asked again.
      this.countedUnavailable = true;
      return undefined;
    }
    const failed = (err: unknown): never => this.failed(source, err);
    const done = (result: PublishResult) => this.answered(source, started, publication, result);
    return written.then(({ positions, counts }) => {
      const channels = positionsByChannel(targets, positions);
      // The targets are exactly the channels publish() counts here (see publishNow).
      const sockets = presence.countFrom?.(counts);
      if (sockets === undefined) {
        // A node this one does not know yet: only Redis can tell, as in publish().
        return this.countOnline([plan]).then(
          ([o]) => done({ id: publication.id, online: o!.online, offline: o!.offline, channels }),
          failed,
        );
      }
      return done({ id: publication.id, ...reachOf(plan.users, targets, sockets), channels });
    }, failed);
  }

  /** Counts a single publish answered: its outcome, its duration, and the offline fallback for whom it missed. */
  private answered(
    source: PublishSource,
    started: number,
    publication: Publication,
    result: PublishResult,
  ): PublishResult {
    const { metrics } = this.deps;
    metrics.publishes.inc({ source, outcome: 'ok' });
    if (result.offline.length > 0) this.deps.onOffline?.(result.offline, publication);
    metrics.publishDuration.observe({ source }, (performance.now() - started) / 1000);
    return result;
  }

  /** Counts a publish that failed, by its error's code, and passes the error on. */
  private failed(source: PublishSource, err: unknown): never {
    this.deps.metrics.publishes.inc({ source, outcome: isRelayError(err) ? err.code : 'internal' });
    throw err;
  }

  /**
   * Validates every message before writing any (a malformed batch writes
   * nothing), then writes them together: one idempotency lookup, one broker
   * call and one presence read for the whole batch. Nothing is acknowledged
   * unless the broker took all of it.
   */
  async publishBatch(
    bodies: readonly PublishBody[],
    source: PublishSource,
    options: Pick<PublishOptions, 'scope'> = {},
  ): Promise<PublishOutcome[]> {
    const plans = bodies.map((body, i) => {
      try {
        return this.plan(body, options);
      } catch (err) {
        if (isRelayError(err)) throw new RelayError(err.code, `messages[${i}]: ${err.message}`);
        throw err;
      }
    });
    const started = performance.now();
    try {
      const results = await this.executeMany(plans, source, (i) => `messages[${i}]: `);
      this.deps.metrics.publishDuration.observe({ source }, (performance.now() - started) / 1000);
      return results.map((result) => ({ ok: true, result }));
    } catch (err) {
      const error = isRelayError(err) ? err : new RelayError('internal');
      this.deps.metrics.publishes.inc({ source, outcome: error.code }, plans.length);
      // A conflict is the publisher's mistake, not something a retry fixes: it answers as itself.
      if (!isRelayError(err) || err.code === 'idempotency_conflict') throw err;
      return plans.map(() => ({ ok: false, error }));
    }
  }

  /** Checks a publish against the rules every source shares; throws the first problem. */
  plan(body: PublishBody, options: PublishOptions = {}): Plan {
    assertEventName(body.event);
    const except = unique(body.except_users);
    for (const u of except) assertUserId(u);
    const excluded = except.length > 0 ? new Set(except) : undefined;
    const users = unique(body.users);
    for (const u of users) assertUserId(u);
    const channels = unique(body.channels);
    for (const c of channels) assertClientChannel(c);
    const broadcast = body.broadcast === true;
    if (broadcast && (users.length > 0 || channels.length > 0)) throw new RelayError('invalid_target');
    if (!broadcast && users.length === 0 && channels.length === 0) throw new RelayError('no_target');
    const data = body.data === undefined ? 'null' : JSON.stringify(body.data);
    // UTF-8 takes at most 3 bytes per UTF-16 unit: only a text that could be too large is measured.
    if (data.length * 3 > this.deps.maxPayloadBytes && Buffer.byteLength(data) > this.deps.maxPayloadBytes) {
      throw new RelayError('payload_too_large', `data is larger than ${this.deps.maxPayloadBytes} bytes`);
    }
    const targeted = excluded ? users.filter((u) => !excluded.has(u)) : users;
    if (options.audience) for (const u of options.audience) assertUserId(u);
    return {
      body,
      users: targeted,
      channels,
      broadcast,
      except,
      data,
      audience: options.audience ? [...new Set(options.audience)].filter((u) => !excluded?.has(u)) : targeted,
      exceptSockets: options.exceptSockets
        ? options.exceptSockets.filter((id) => SOCKET_ID_RE.test(id))
        : NONE,
      resultKey:
        body.id === undefined
          ? undefined
          : options.scope === undefined
            ? body.id
            : `${options.scope}/${body.id}`,
      digest: body.id === undefined ? '' : digest(body.event, data, users, channels, broadcast, except),
      countsTargets: !broadcast && options.audience === undefined,
    };
  }

  /** Writes validated publishes: each answered from an earlier publish with its id, or appended and fanned out. */
  private async executeMany(
    plans: readonly Plan[],
    source: PublishSource,
    where: (index: number) => string = () => '',
  ): Promise<PublishResult[]> {
    const { broker, results, metrics } = this.deps;
    const ids = plans.map((p) => p.resultKey).filter((id): id is string => id !== undefined);
    const previous = ids.length > 0 ? await results.getMany(ids) : undefined;
    // Checked before anything is written: a batch with a conflict writes nothing.
    const out: (PublishResult | undefined)[] = plans.map((p, index) => {
      const stored = p.resultKey !== undefined ? previous?.get(p.resultKey) : undefined;
      return stored === undefined ? undefined : answerOf(stored, p, where(index));
    });
    const fresh = plans.flatMap((plan, index) => {
      if (out[index]) {
        metrics.publishes.inc({ source, outcome: 'duplicate' });
        return [];
      }
      return [{ index, plan, publication: publicationOf(plan), targets: targetsOf(plan) }];
    });
    if (fresh.length === 0) return out as PublishResult[];

    const items = fresh.map((f) => ({
      publication: f.publication,
      channels: f.targets,
      idempotent: f.plan.body.id !== undefined,
      key: f.plan.resultKey,
    }));
    const freshPlans = fresh.map((f) => f.plan);
    let positions: Position[][];
    let online: { online: PublishResult['online']; offline: string[] }[];
    // Where every channel to count is a target, the write and the count are one step.
    const counted =
      this.deps.presence.countFrom && fresh.every((f) => f.plan.countsTargets)
        ? await broker.publishManyCounted?.(items)
        : undefined;
    if (counted) {
      positions = counted.positions;
      const sockets = this.deps.presence.countFrom?.(counted.counts.flat());
      if (sockets) {
        const count = new Map<string, number>();
        let n = 0;
        for (const f of fresh) for (const t of f.targets) count.set(t, sockets[n++] ?? 0);
        online = tally(freshPlans, count, 0);
      } else online = await this.countOnline(freshPlans);
    } else {
      [positions, online] = await Promise.all([broker.publishMany(items), this.countOnline(freshPlans)]);
    }
    const made = fresh.map((f, i): PublishResult => {
      const channels: Record<string, Position> = {};
      f.targets.forEach((t, j) => {
        setPosition(channels, t, positions[i]![j]!);
      });
      return { id: f.publication.id, online: online[i]!.online, offline: online[i]!.offline, channels };
    });
    // The first answer stored for an id wins, so a repeat answers exactly what the first publish did.
    const keyed = fresh.flatMap((f, i) =>
      f.plan.resultKey !== undefined
        ? [[f.plan.resultKey, { result: made[i]!, digest: f.plan.digest }] as const]
        : [],
    );
    const kept = keyed.length > 0 ? await results.putMany(keyed) : [];
    let k = 0;
    fresh.forEach((f, i) => {
      // A concurrent publish with the same id and another body stored its answer first: this one conflicts.
      out[f.index] = f.plan.resultKey !== undefined ? answerOf(kept[k++]!, f.plan, where(f.index)) : made[i]!;
      metrics.publishes.inc({ source, outcome: 'ok' });
      const offline = online[i]!.offline;
      if (offline.length > 0) this.deps.onOffline?.(offline, f.publication);
    });
    return out as PublishResult[];
  }

  /** Who each publish reached, from one presence read for all of them. */
  private async countOnline(
    plans: readonly Plan[],
  ): Promise<{ online: PublishResult['online']; offline: string[] }[]> {
    const { presence } = this.deps;
    const wanted = new Set<string>();
    for (const p of plans) {
      if (p.broadcast) for (const u of p.except) wanted.add(userChannel(u));
      else {
        for (const u of p.audience) wanted.add(userChannel(u));
        for (const c of p.channels) wanted.add(c);
      }
    }
    const channels = [...wanted];
    const broadcast = plans.some((p) => p.broadcast);
    // A driver that knows the counts locally answers without a promise per publish.
    const [counts, total] =
      presence.countNow && (!broadcast || presence.connectionsNow)
        ? [presence.countNow(channels), broadcast ? presence.connectionsNow!() : 0]
        : await Promise.all([
            presence.count(channels),
            broadcast ? presence.nodes().then((nodes) => nodes.reduce((n, node) => n + node.sockets, 0)) : 0,
          ]);
    const count = new Map(channels.map((c, i) => [c, counts[i] ?? 0]));
    return tally(plans, count, total);
  }
}

/**
 * A publish the one-step paths (publishNow, publishCounted) take: no
 * idempotency `id` to look up, not a broadcast (its count asks every node),
 * no audience of its own.
 */
function single(body: PublishBody, options: PublishOptions): boolean {
  return body.id === undefined && body.broadcast !== true && options.audience === undefined;
}

/** The publication a validated publish writes: its id, or a new one. */
function publicationOf(plan: Plan): Publication {
  return {
    id: plan.body.id ?? randomUUID(),
    event: plan.body.event,
    data: plan.data,
    ts: Date.now(),
    except: plan.except.length > 0 ? plan.except : undefined,
    exceptSockets: plan.exceptSockets.length > 0 ? plan.exceptSockets : undefined,
  };
}

/** The channels a publish goes to: its users' own channels, then its channels (the usual one user without spreads). */
function targetsOf(plan: Plan): string[] {
  if (plan.broadcast) return [BROADCAST_CHANNEL];
  const { users, channels } = plan;
  if (channels.length === 0 && users.length === 1) return [userChannel(users[0]!)];
  return [...users.map(userChannel), ...channels];
}

/**
 * Puts a channel's position in an answer. `__proto__` is a valid channel
 * name: assigned, it would replace the object's prototype and be left out of
 * the answer, so it is defined as an own property. (An object without a
 * prototype would do too, but V8 keeps those in dictionary mode: ~0.5 µs
 * more per publish.)
 */
function setPosition(answer: Record<string, Position>, channel: string, position: Position): void {
  if (channel === '__proto__') {
    Object.defineProperty(answer, channel, {
      value: position,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else answer[channel] = position;
}

/** A publish's positions by channel, for its answer. */
function positionsByChannel(
  targets: readonly string[],
  positions: readonly Position[],
): Record<string, Position> {
  const channels: Record<string, Position> = {};
  for (let i = 0; i < targets.length; i++) setPosition(channels, targets[i]!, positions[i]!);
  return channels;
}

/**
 * Who a single publish reached, from the socket counts of its targets
 * (`targetsOf`: its users' own channels first, each once, then its channels).
 */
function reachOf(
  users: readonly string[],
  targets: readonly string[],
  counts: readonly number[],
): { online: PublishResult['online']; offline: string[] } {
  const offline: string[] = [];
  let online = 0;
  let sockets = 0;
  for (let i = 0; i < targets.length; i++) {
    const n = counts[i] ?? 0;
    sockets += n;
    if (i < users.length) {
      if (n > 0) online++;
      else offline.push(users[i]!);
    }
  }
  return { online: { users: online, sockets }, offline };
}

/** Who each publish reached, from socket counts per channel (and the cluster's total, for broadcasts). */
function tally(
  plans: readonly Plan[],
  count: ReadonlyMap<string, number>,
  total: number,
): { online: PublishResult['online']; offline: string[] }[] {
  return plans.map((p) => {
    if (p.broadcast) {
      const excluded = p.except.reduce((n, u) => n + (count.get(userChannel(u)) ?? 0), 0);
      return { online: { users: 0, sockets: Math.max(0, total - excluded) }, offline: [] };
    }
    const offline: string[] = [];
    let users = 0;
    let sockets = 0;
    for (const u of p.audience) {
      const n = count.get(userChannel(u)) ?? 0;
      sockets += n;
      if (n > 0) users++;
      else offline.push(u);
    }
    for (const c of p.channels) sockets += count.get(c) ?? 0;
    return { online: { users, sockets }, offline };
  });
}

/** The stored answer for a repeated id, or idempotency_conflict when the repeat asks for something else. */
function answerOf(stored: StoredResult, plan: Plan, where: string): PublishResult {
  // Answers stored before digests were kept have none: they are taken as matching.
  if (stored.digest && stored.digest !== plan.digest) {
    throw new RelayError(
      'idempotency_conflict',
      `${where}id ${JSON.stringify(plan.body.id)} was already used with a different event, data or targets within the idempotency window; use a new id for a new message`,
    );
  }
  return stored.result;
}

/** What a publish asks for, independent of the order of its lists. */
function digest(
  event: string,
  data: string,
  users: readonly string[],
  channels: readonly string[],
  broadcast: boolean,
  except: readonly string[],
): string {
  const text = JSON.stringify([
    event,
    data,
    [...users].sort(),
    [...channels].sort(),
    broadcast,
    [...except].sort(),
  ]);
  return createHash('sha256').update(text).digest('base64url');
}

/** A publish's data as its encoding carries it (absent is null), for brokers that deliver it without parsing it again. */
function dataValue(body: PublishBody): unknown {
  return body.data === undefined ? null : body.data;
}
