import type { Logger } from 'pino';
import { isRelayError } from '../../errors.js';
import { type Redis, STREAM_BLOCK_MS } from '../../redis/client.js';
import type { RedisNames } from '../../redis/keys.js';
import { type BatchItem, runBatch } from '../../redis/slots.js';
import type { PublishSource } from '../ingest.js';
import { BROADCAST_CHANNEL, userChannel } from '../message.js';
import { type PublishBody, parsePublishBody } from '../schema.js';
import { crc32, mix32 } from './hash.js';
import { defineLease, Lease, leaseHolder } from './lease.js';
import { HEARTBEAT_MS } from './membership.js';
import { sample } from './throttled-log.js';
import { type Decoded, reportRefusal, type SourceContext } from './types.js';

// The durable ingest: `XADD <stream> * body '<publish JSON>'`, exactly once
// and in XADD order per channel, with the work spread over the nodes.
//
// One consumer group with parallel consumers would reorder (a claimed entry
// arrives after later ones), so the work is split in two stages:
// - The router (one node at a time, by lease) reads the stream through the
//   consumer group in order, checks each entry, and appends it to the
//   partition stream of each of its targets (partition = CRC-32 of the
//   target's channel mod P) with the entry's own id as the partition entry
//   id. A router that dies between those appends and its XACK is redone by
//   its successor, whose repeated XADD fails with "equal or smaller ID":
//   already routed. Bad entries go to the dead-letter stream. The router
//   only parses and appends, so it is cheap per entry.
// - Each partition is owned by one node at a time (lease); each node owns
//   about P / (live nodes) of them. The owner reads its partition through
//   the partition's consumer group, publishes each entry through the one
//   publish path in id order (each awaited before the next), then XACKs. A
//   new owner first claims and handles the previous owner's pending entries,
//   in id order, before reading new ones; the idempotency id (the message
//   `id`, else the entry id) makes the redo deliver nothing twice.
// Per channel, every entry goes through one partition, handled by one node
// at a time in id order: XADD order is kept across deaths and drains.
// Trimming removes only what every consumer group of a stream has
// acknowledged.

const GROUP = 'pushrelay';
const ROUTER_BATCH = 200;
const PARTITION_BATCH = 100;
/** Characters of a dead entry kept in its dead letter. */
const DEAD_BODY_CHARS = 1024;
/** Failures of one entry on something other than Redis being away before it is dead-lettered as `internal`. */
const MAX_ATTEMPTS = 3;
const ALREADY_ROUTED = /equal or smaller than the target stream top item/;

// KEYS: stream. Trims every entry that all of the stream's consumer groups
// have acknowledged (below the oldest pending entry, and not past what each
// group has read), never one a group has not handled.
const TRIM_LUA = `
local function older(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end
local ok, groups = pcall(redis.call, 'xinfo', 'groups', KEYS[1])
if not ok then return 0 end
local floor = nil
for _, g in ipairs(groups) do
  local name, pending, last = nil, 0, '0-0'
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'pending' then pending = tonumber(g[i + 1])
    elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local f
  if pending > 0 then
    f = redis.call('xpending', KEYS[1], name)[2]
  else
    local ms, seq = string.match(last, '(%d+)-(%d+)')
    f = ms .. '-' .. (tonumber(seq) + 1)
  end
  if floor == nil or older(f, floor) then floor = f end
end
if floor == nil then return 0 end
return redis.call('xtrim', KEYS[1], 'MINID', floor)
`;

interface TrimCommand {
  relayIngestTrim(stream: string): Promise<number>;
}

type Entry = [id: string, fields: string[]];

/** One publish of a partition entry: the part of a publish whose targets fall in that partition. */
interface PartItem {
  /** The part's publish body, its idempotency id set. */
  readonly b: PublishBody;
  /** Idempotency scope. */
  readonly s: string;
  /** Users counted for the offline fallback: all of the publish's on its first part, none on the others. */
  readonly a?: string[];
}

export interface StreamPipelineSpec {
  /** Names the pipeline's keys (`publish`, `anycable`). */
  readonly name: string;
  readonly source: PublishSource;
  /** The stream producers XADD to. */
  readonly stream: string;
  /** The entry field holding the message (`body`, AnyCable's `payload`). */
  readonly field: string;
  /** Turns the field's text into what to do; never throws. */
  decode(text: string): Decoded[];
  /** Idempotency id of the i-th of n publishes of an entry that carries none. */
  idFor(entryId: string, index: number, count: number): string;
}

export interface StreamDeps {
  readonly command: Redis;
  /** A new connection of its own for a worker's blocking reads. */
  readonly connect: () => Redis;
  readonly names: RedisNames;
  readonly nodeId: string;
  readonly ctx: SourceContext;
  /** PUSHRELAY_INGEST_PARTITIONS: used when this node is the first to set it. */
  readonly partitions: number;
  /** Dead letters kept (approximately); 0 keeps none. */
  readonly deadLetters: number;
  /** Live ingest members, for this node's fair share of partitions. */
  readonly members: () => number;
}

/** The channels a publish body reaches: what its order is kept per. */
function targetsOf(body: PublishBody): string[] {
  if (body.broadcast === true) return [BROADCAST_CHANNEL];
  return [...(body.users ?? []).map(userChannel), ...(body.channels ?? [])];
}

function fieldOf(fields: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

/** Milliseconds part of a stream id. */
function idTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Reads one stream through the consumer group `pushrelay` while its lease is
 * held: first every entry pending in the group (its own from before, a
 * previous holder's), oldest first, then new ones; hands each batch to
 * `handle` in order and acknowledges what it finished.
 */
class StreamWorker {
  private stopping = false;
  private reading = false;
  private readonly done: Promise<void>;
  private readonly conn: Redis;

  constructor(
    private readonly deps: StreamDeps,
    readonly key: string,
    private readonly role: 'router' | 'partition',
    private readonly source: PublishSource,
    readonly lease: Lease,
    private readonly batch: number,
    /** Handles entries in order; answers how many (from the first) are finished. */
    private readonly handle: (entries: Entry[], lease: Lease) => Promise<number>,
  ) {
    this.conn = deps.connect();
    this.conn.defineCommand('relayIngestTrim', { numberOfKeys: 1, lua: TRIM_LUA });
    this.done = this.run();
  }

  /** Stops after the entry in progress, acknowledges what is finished, and closes its connection. */
  async stop(): Promise<void> {
    this.stopping = true;
    // A blocked read returns at once; entries Redis handed it meanwhile stay
    // pending in the group and the next holder claims them.
    if (this.reading) this.conn.disconnect();
    await this.done;
    this.conn.disconnect();
    const { metrics } = this.deps.ctx;
    metrics.ingestStreamLag.remove({ stream: this.key });
    metrics.ingestStreamPending.remove({ stream: this.key });
  }

  private async run(): Promise<void> {
    const { ctx, nodeId } = this.deps;
    let needGroup = true;
    let checkPending = true;
    let takenOver = false;
    let backoff = 0;
    while (!this.stopping) {
      if (!this.lease.held) {
        // Not renewed in time (Redis slow, event loop busy): wait, and start
        // again from the pending list once it is. If it was lost, the round
        // that finds out stops this worker.
        checkPending = true;
        await sleep(100);
        continue;
      }
      try {
        if (needGroup) {
          await this.conn.xgroup('CREATE', this.key, GROUP, '0', 'MKSTREAM').catch((err: Error) => {
            if (!/BUSYGROUP/.test(err.message)) throw err;
          });
          needGroup = false;
        }
        let entries: Entry[] = [];
        if (checkPending) {
          const pending = (await this.conn.xpending(this.key, GROUP, '-', '+', this.batch)) as [
            string,
            string,
            number,
            number,
          ][];
          if (pending.length === 0) {
            checkPending = false;
            if (!takenOver) {
              takenOver = true;
              await this.forgetIdleConsumers();
            }
            continue;
          }
          const others = pending.filter((p) => p[1] !== nodeId).length;
          const claimed = (await this.conn.xclaim(
            this.key,
            GROUP,
            nodeId,
            0,
            ...pending.map((p) => p[0]),
          )) as (Entry | null)[];
          entries = claimed.filter((e): e is Entry => e !== null);
          if (others > 0) {
            ctx.metrics.ingestClaimedEntries.inc({ source: this.source, role: this.role }, others);
            ctx.log.info(
              { stream: this.key, entries: others, from: [...new Set(pending.map((p) => p[1]))] },
              'took over stream entries another node had read',
            );
          }
          // Entries trimmed meanwhile are dropped from the pending list by XCLAIM itself.
          if (entries.length === 0) continue;
        } else {
          this.reading = true;
          const reply = (await this.conn.xreadgroup(
            'GROUP',
            GROUP,
            nodeId,
            'COUNT',
            this.batch,
            'BLOCK',
            STREAM_BLOCK_MS,
            'STREAMS',
            this.key,
            '>',
          )) as [string, Entry[]][] | null;
          this.reading = false;
          entries = reply?.[0]?.[1] ?? [];
        }
        if (entries.length === 0) {
          ctx.metrics.ingestStreamLag.set({ stream: this.key }, 0);
          continue;
        }
        ctx.metrics.ingestStreamLag.set(
          { stream: this.key },
          Math.max(0, Date.now() - idTime(entries[0]![0])) / 1000,
        );
        const finished = await this.handle(entries, this.lease);
        if (finished > 0) {
          await this.conn.xack(this.key, GROUP, ...entries.slice(0, finished).map((e) => e[0]));
          await (this.conn as Redis & TrimCommand).relayIngestTrim(this.key);
        }
        if (finished < entries.length) {
          // The rest stays pending for this node: picked up again, in order, from the pending list.
          checkPending = true;
          backoff = Math.min(1000, Math.max(50, backoff * 2));
          await sleep(backoff);
        } else backoff = 0;
      } catch (err) {
        this.reading = false;
        if (this.stopping) break;
        const message = err instanceof Error ? err.message : String(err);
        if (/NOGROUP/.test(message)) needGroup = true;
        checkPending = true;
        backoff = Math.min(1000, Math.max(50, backoff * 2));
        ctx.log.debug({ stream: this.key, err: message }, 'ingest stream read failed; retrying');
        await sleep(backoff);
      }
    }
  }

  /** Consumers of nodes long gone, with nothing pending, only clutter XINFO CONSUMERS. */
  private async forgetIdleConsumers(): Promise<void> {
    const consumers = (await this.conn.xinfo('CONSUMERS', this.key, GROUP).catch(() => [])) as unknown[][];
    for (const c of consumers) {
      const name = fieldOf(c as string[], 'name');
      const pending = Number(fieldOf(c as string[], 'pending') ?? 1);
      if (name !== undefined && name !== this.deps.nodeId && pending === 0) {
        await this.conn.xgroup('DELCONSUMER', this.key, GROUP, name).catch(() => {});
      }
    }
  }
}

/** One stream (the publish stream, AnyCable's): its router and its partitions. */
class Pipeline {
  private count: number | undefined;
  private router: StreamWorker | undefined;
  private readonly owned = new Map<number, StreamWorker>();
  /** Failures per partition entry id, for entries that keep failing on something other than Redis. */
  private readonly attempts = new Map<string, number>();
  private draining = false;

  constructor(
    private readonly deps: StreamDeps,
    private readonly spec: StreamPipelineSpec,
  ) {}

  get partitionsOwned(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  get routing(): boolean {
    return this.router !== undefined;
  }

  /** One round: renew what this node holds, then take or give up work to hold its fair share. */
  async tick(): Promise<void> {
    const { command, names, nodeId, ctx } = this.deps;
    if (this.count === undefined) {
      const key = names.ingestPartitionCount(this.spec.name);
      await command.set(key, this.deps.partitions, 'NX');
      const agreed = Number(await command.get(key));
      if (!Number.isInteger(agreed) || agreed < 1) return;
      if (agreed !== this.deps.partitions) {
        ctx.log.warn(
          { configured: this.deps.partitions, used: agreed, key },
          'PUSHRELAY_INGEST_PARTITIONS differs from the count the cluster uses; using the cluster’s',
        );
      }
      this.count = agreed;
    }
    const count = this.count;

    // Renew, and stop what was lost.
    const held = [...(this.router ? [['router', this.router] as const] : []), ...this.owned.entries()];
    await Promise.all(
      held.map(async ([which, worker]) => {
        if (!(await worker.lease.renew())) await this.drop(which, worker, false);
      }),
    );
    if (this.draining) return;

    const routerKeys = names.ingestRouterLease(this.spec.name);
    const partitionKeys = Array.from({ length: count }, (_, k) =>
      names.ingestPartitionLease(this.spec.name, k),
    );
    const holders = await Promise.all([routerKeys, ...partitionKeys].map((k) => command.get(k.lease)));

    if (this.router === undefined && holders[0] === null) {
      const lease = new Lease(command, routerKeys, nodeId);
      const generation = await lease.acquire();
      if (generation !== undefined) this.startRouter(lease, generation);
    }

    const share = Math.ceil(count / Math.max(1, this.deps.members()));
    const mine = this.owned.size;
    if (mine > share) {
      // Give up the ones this node prefers least; the others take them at their next round.
      const extra = [...this.owned.keys()]
        .sort((a, b) => this.preference(a) - this.preference(b))
        .slice(0, mine - share);
      await Promise.all(extra.map((k) => this.drop(k, this.owned.get(k)!, true)));
    } else if (mine < share) {
      const free = partitionKeys
        .map((_, k) => k)
        .filter((k) => holders[k + 1] === null && !this.owned.has(k))
        .sort((a, b) => this.preference(b) - this.preference(a))
        .slice(0, share - mine);
      await Promise.all(
        free.map(async (k) => {
          const lease = new Lease(command, partitionKeys[k]!, nodeId);
          const generation = await lease.acquire();
          if (generation !== undefined) this.startPartition(k, lease, generation);
        }),
      );
    }
    const partitionsHeldElsewhere = holders
      .slice(1)
      .filter((h) => h !== null && leaseHolder(h) !== nodeId).length;
    ctx.log.trace(
      { pipeline: this.spec.name, owned: this.partitionsOwned, elsewhere: partitionsHeldElsewhere },
      'ingest stream round',
    );
    ctx.metrics.ingestPartitionsOwned.set({ source: this.spec.source }, this.owned.size);
    ctx.metrics.ingestRouter.set({ source: this.spec.source }, this.router ? 1 : 0);
    await this.reportPending();
  }

  /** Gives up all stream work at once so other nodes take it over (drain). */
  async drain(): Promise<void> {
    this.draining = true;
    await this.stopAll();
  }

  async stopAll(): Promise<void> {
    const all = [...(this.router ? [['router', this.router] as const] : []), ...this.owned.entries()];
    await Promise.all(all.map(([which, worker]) => this.drop(which, worker, true)));
  }

  /** A stable, node-specific order over partitions, so restarts tend to take the same ones. */
  private preference(k: number): number {
    return mix32(crc32(this.deps.nodeId) ^ Math.imul(k + 1, 0x9e3779b1));
  }

  private startRouter(lease: Lease, generation: number): void {
    const { ctx } = this.deps;
    if (generation > 1) ctx.metrics.ingestTakeovers.inc({ source: this.spec.source, role: 'router' });
    ctx.log.info({ stream: this.spec.stream, generation }, 'routing the ingest stream');
    this.router = new StreamWorker(
      this.deps,
      this.spec.stream,
      'router',
      this.spec.source,
      lease,
      ROUTER_BATCH,
      (entries) => this.route(entries),
    );
  }

  private startPartition(k: number, lease: Lease, generation: number): void {
    const { ctx, names } = this.deps;
    if (generation > 1) ctx.metrics.ingestTakeovers.inc({ source: this.spec.source, role: 'partition' });
    ctx.log.debug({ pipeline: this.spec.name, partition: k, generation }, 'owning an ingest partition');
    this.owned.set(
      k,
      new StreamWorker(
        this.deps,
        names.ingestPartition(this.spec.name, k),
        'partition',
        this.spec.source,
        lease,
        PARTITION_BATCH,
        (entries, l) => this.publishPart(entries, l),
      ),
    );
  }

  private async drop(which: 'router' | number, worker: StreamWorker, release: boolean): Promise<void> {
    if (which === 'router') this.router = undefined;
    else this.owned.delete(which);
    await worker.stop();
    if (release) await worker.lease.release();
  }

  private async reportPending(): Promise<void> {
    const { command, ctx } = this.deps;
    const workers = [...(this.router ? [this.router] : []), ...this.owned.values()];
    await Promise.all(
      workers.map(async (w) => {
        const groups = (await command.xinfo('GROUPS', w.key).catch(() => [])) as string[][];
        const mine = groups.find((g) => fieldOf(g, 'name') === GROUP);
        if (!mine) return;
        const pending = Number(fieldOf(mine, 'pending') ?? 0) + Number(fieldOf(mine, 'lag') ?? 0);
        ctx.metrics.ingestStreamPending.set({ stream: w.key }, pending);
      }),
    );
  }

  /** Router: checks each entry and appends its parts to their partitions, dead-letters the bad ones. */
  private async route(entries: Entry[]): Promise<number> {
    const { names, ctx } = this.deps;
    const count = this.count!;
    const items: BatchItem[] = [];
    const isPartitionWrite: boolean[] = [];
    const dead: { reason: string; entry: string }[] = [];
    for (const [id, fields] of entries) {
      const deadLetter = (reason: string, detail: string, text: string) => {
        reportRefusal(
          ctx,
          this.spec.source,
          reason,
          detail,
          { stream: this.spec.stream, entry: id },
          sample(text),
        );
        dead.push({ reason, entry: id });
        const item = this.deadLetterItem(reason, id, text);
        if (item) {
          items.push(item);
          isPartitionWrite.push(false);
        }
      };
      const text = fieldOf(fields, this.spec.field);
      if (text === undefined) {
        deadLetter('no_body', `the entry has no "${this.spec.field}" field`, fields.join(' '));
        continue;
      }
      if (Buffer.byteLength(text) > ctx.maxPayloadBytes) {
        deadLetter(
          'payload_too_large',
          `the entry is ${Buffer.byteLength(text)} bytes; the limit is ${ctx.maxPayloadBytes} (PUSHRELAY_MAX_PAYLOAD_BYTES)`,
          text,
        );
        continue;
      }
      const decoded = this.spec.decode(text);
      const publishes = decoded.filter((d) => d.kind === 'publish');
      const parts = new Map<number, PartItem[]>();
      let n = 0;
      for (const d of decoded) {
        if (d.kind === 'ignore') {
          ctx.metrics.ingestIgnored.inc({ source: this.spec.source, reason: d.reason });
          ctx.metrics.ingestMessages.inc({ source: this.spec.source, outcome: 'ignored' });
          continue;
        }
        if (d.kind === 'refuse') {
          deadLetter(d.reason, d.detail, text);
          continue;
        }
        const index = n++;
        let plan: ReturnType<typeof ctx.ingest.plan>;
        try {
          plan = ctx.ingest.plan(d.body);
        } catch (err) {
          if (!isRelayError(err)) throw err;
          deadLetter(err.code, err.message, text);
          continue;
        }
        const body: PublishBody = {
          ...d.body,
          id: d.body.id ?? this.spec.idFor(id, index, publishes.length),
        };
        for (const [k, part] of this.split(body, plan, count)) {
          const list = parts.get(k) ?? [];
          list.push(part);
          parts.set(k, list);
        }
      }
      for (const [k, list] of parts) {
        const key = names.ingestPartition(this.spec.name, k);
        items.push({ key, add: (p) => p.xadd(key, id, 'm', JSON.stringify(list)) });
        isPartitionWrite.push(true);
      }
    }
    const replies = await runBatch(this.deps.command, items);
    replies.forEach(([err], i) => {
      // A repeated XADD of an id already in the partition: routed before (by this node or a predecessor).
      if (err && !(isPartitionWrite[i] && ALREADY_ROUTED.test(err.message))) throw err;
    });
    for (const d of dead) ctx.metrics.ingestDeadLetters.inc({ source: this.spec.source, reason: d.reason });
    return entries.length;
  }

  /**
   * The parts of one publish, by partition of its targets. A user's own
   * channel and a channel name hash the same way everywhere, so a channel's
   * entries always meet in one partition. With several parts, the first
   * counts every user for the offline fallback and the others count none, so
   * it runs once per publish.
   */
  private split(
    body: PublishBody,
    plan: ReturnType<SourceContext['ingest']['plan']>,
    count: number,
  ): Map<number, PartItem> {
    const of = (target: string) => crc32(target) % count;
    const scope = this.spec.source;
    if (plan.broadcast) return new Map([[of(BROADCAST_CHANNEL), { b: body, s: scope }]]);
    const users = new Map<number, string[]>();
    const channels = new Map<number, string[]>();
    for (const u of plan.users) {
      const k = of(userChannel(u));
      users.set(k, [...(users.get(k) ?? []), u]);
    }
    for (const c of plan.channels) {
      const k = of(c);
      channels.set(k, [...(channels.get(k) ?? []), c]);
    }
    const ks = [...new Set([...users.keys(), ...channels.keys()])].sort((a, b) => a - b);
    if (ks.length === 1) return new Map([[ks[0]!, { b: body, s: scope }]]);
    return new Map(
      ks.map((k, i) => {
        const { users: _u, channels: _c, ...rest } = body;
        const partUsers = users.get(k);
        const partChannels = channels.get(k);
        const part: PublishBody = {
          ...rest,
          ...(partUsers ? { users: partUsers } : {}),
          ...(partChannels ? { channels: partChannels } : {}),
        };
        return [k, { b: part, s: `${scope}:p${k}`, a: i === 0 ? [...plan.users] : [] }];
      }),
    );
  }

  private deadLetterItem(reason: string, entry: string, text: string): BatchItem | undefined {
    if (this.deps.deadLetters === 0) return undefined;
    const key = this.deps.names.ingestDead;
    const body = text.length > DEAD_BODY_CHARS ? text.slice(0, DEAD_BODY_CHARS) : text;
    return {
      key,
      add: (p) =>
        p.xadd(
          key,
          'MAXLEN',
          '~',
          this.deps.deadLetters,
          '*',
          'reason',
          reason,
          'entry',
          entry,
          'body',
          body,
          'source',
          this.spec.source,
        ),
    };
  }

  /**
   * Partition owner: publishes each entry's parts. Order matters per target
   * (a user's or a channel's messages), so an entry waits for the entries
   * before it that share one of its targets, and entries with no target in
   * common run at once. Answers how many entries, from the first, are
   * finished: an entry that must be retried holds back the acknowledgement of
   * everything after it (those are redone, idempotently).
   */
  private async publishPart(entries: Entry[], lease: Lease): Promise<number> {
    const last = new Map<string, Promise<boolean>>();
    const outcomes = entries.map(([id, fields]) => {
      let parts: PartItem[];
      try {
        parts = JSON.parse(fieldOf(fields, 'm') ?? '') as PartItem[];
        if (!Array.isArray(parts)) throw new Error('not a list');
      } catch {
        // Only the router writes partitions; anything else there is not ours to publish.
        return this.writeDead(
          'invalid_json',
          id,
          fields.join(' '),
          'a partition entry is not what the router writes',
        ).then(
          () => true,
          () => false,
        );
      }
      const targets = new Set(parts.flatMap((p) => targetsOf(p.b)));
      const before = [...targets].flatMap((t) => last.get(t) ?? []);
      const outcome = Promise.all(before).then(
        (ok) => ok.every(Boolean) && lease.held && this.publishEntry(id, parts),
      );
      for (const t of targets) last.set(t, outcome);
      return outcome;
    });
    const finished = await Promise.all(outcomes);
    const done = finished.indexOf(false);
    return done === -1 ? entries.length : done;
  }

  /** One partition entry's parts, in order; false when it must be tried again later. */
  private async publishEntry(id: string, parts: PartItem[]): Promise<boolean> {
    const { ctx } = this.deps;
    const source = this.spec.source;
    for (const part of parts) {
      try {
        await ctx.ingest.publish(parsePublishBody(part.b), source, {
          scope: part.s,
          ...(part.a ? { audience: part.a } : {}),
        });
        ctx.metrics.ingestMessages.inc({ source, outcome: 'published' });
      } catch (err) {
        if (isRelayError(err) && err.code !== 'unavailable' && err.code !== 'internal') {
          // Refused by the publish path itself (e.g. an id reused with another body): dead-letter this part.
          try {
            await this.writeDead(err.code, id, JSON.stringify(part.b), err.message);
          } catch {
            return false;
          }
          continue;
        }
        ctx.metrics.ingestMessages.inc({ source, outcome: 'failed' });
        if (isRelayError(err) && err.code === 'unavailable') return false;
        const attempts = (this.attempts.get(id) ?? 0) + 1;
        this.attempts.set(id, attempts);
        if (attempts < MAX_ATTEMPTS) {
          ctx.log.error({ err, entry: id, attempts }, 'publishing an ingest stream entry failed; retrying');
          return false;
        }
        try {
          await this.writeDead(
            'internal',
            id,
            JSON.stringify(part.b),
            err instanceof Error ? err.message : String(err),
          );
        } catch {
          return false;
        }
      }
    }
    this.attempts.delete(id);
    return true;
  }

  private async writeDead(reason: string, entry: string, text: string, detail: string): Promise<void> {
    const { ctx } = this.deps;
    reportRefusal(ctx, this.spec.source, reason, detail, { stream: this.spec.stream, entry }, sample(text));
    const item = this.deadLetterItem(reason, entry, text);
    if (item) {
      const [reply] = await runBatch(this.deps.command, [item]);
      if (reply?.[0]) throw reply[0];
    }
    ctx.metrics.ingestDeadLetters.inc({ source: this.spec.source, reason });
  }
}

/** Every durable ingest stream of this node: the publish stream and, with AnyCable, its redisx stream. */
export class StreamIngest {
  private readonly pipelines: Pipeline[];
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopped = false;

  constructor(
    deps: StreamDeps,
    specs: readonly StreamPipelineSpec[],
    private readonly log: Logger,
  ) {
    defineLease(deps.command);
    this.pipelines = specs.map((s) => new Pipeline(deps, s));
  }

  /** Which partitions (and whether the router) this node holds, per pipeline; for tests and the console. */
  ownership(): { partitions: number[]; router: boolean }[] {
    return this.pipelines.map((p) => ({ partitions: p.partitionsOwned, router: p.routing }));
  }

  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), HEARTBEAT_MS);
    this.timer.unref();
  }

  /** Hands all stream work to the other nodes now. */
  async drain(): Promise<void> {
    clearInterval(this.timer);
    await this.ticking;
    await Promise.all(this.pipelines.map((p) => p.drain()));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.ticking;
    await Promise.all(this.pipelines.map((p) => p.stopAll()));
  }

  private async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = (async () => {
      for (const p of this.pipelines) {
        try {
          await p.tick();
        } catch (err) {
          this.log.debug(
            { err: err instanceof Error ? err.message : String(err) },
            'ingest stream round failed',
          );
        }
      }
    })();
    try {
      await this.ticking;
    } finally {
      this.ticking = undefined;
    }
  }
}
