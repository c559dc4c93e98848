import { randomBytes } from 'node:crypto';
import {
  type Delivery,
  decodePublication,
  encodePublication,
  type Message,
  messageOf,
  type Position,
  type Publication,
  UNBORN_EPOCH,
} from '../ingest/message.js';
import type { Broker, ChannelTop, HistoryEntry, HistoryResult, PublishItem, Retention } from './types.js';

interface Entry {
  readonly offset: number;
  readonly ts: number;
  readonly text: string;
}

interface ChannelState {
  epoch: string;
  offset: number;
  /** Oldest first; never longer than the retention size. */
  entries: Entry[];
  lastUsed: number;
  /** Time of the newest publish (ms; 0: none). */
  lastTs: number;
}

interface IdempotencyEntry {
  readonly position: Position;
  readonly expires: number;
}

const UNBORN: ChannelTop = { offset: 0, epoch: UNBORN_EPOCH, lastTs: 0 };

/** How long an idle channel keeps its epoch and offset when nobody is subscribed. */
const IDLE_CHANNEL_MS = 24 * 3600 * 1000;
const SWEEP_MS = 30_000;

/**
 * Standalone broker: history in memory, fan-out by direct call. Publishing
 * and delivery happen in the same tick, so order and atomicity are given.
 */
export class MemoryBroker implements Broker {
  private readonly channels = new Map<string, ChannelState>();
  private readonly subscribed = new Set<string>();
  private readonly idempotency = new Map<string, IdempotencyEntry>();
  private deliveryHandler: (d: Delivery) => void = () => {};
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly retention: (channel: string) => Retention,
    private readonly idempotencyMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  async publish(
    publication: Publication,
    channels: readonly string[],
    idempotent: boolean,
    key: string = publication.id,
  ): Promise<Position[]> {
    return this.publishNow(publication, channels, idempotent, key);
  }

  /**
   * publish() answered in the calling turn: everything it touches is in this
   * process. `value`, when given, is `publication.data` already parsed (the
   * caller parsed the JSON it came from), so delivery does not parse it again.
   */
  publishNow(
    publication: Publication,
    channels: readonly string[],
    idempotent: boolean,
    key: string = publication.id,
    value?: unknown,
  ): Position[] {
    const text = encodePublication(publication);
    const now = this.now();
    const positions: Position[] = [];
    let message: Message | undefined;
    for (const channel of channels) {
      const marker = idempotent ? `${channel}\u0000${key}` : '';
      if (idempotent) {
        const seen = this.idempotency.get(marker);
        if (seen && seen.expires > now) {
          positions.push(seen.position);
          continue;
        }
      }
      const state = this.state(channel, now);
      const { size } = this.retention(channel);
      state.offset += 1;
      state.lastTs = publication.ts;
      if (size > 0) {
        state.entries.push({ offset: state.offset, ts: publication.ts, text });
        if (state.entries.length > size) state.entries.splice(0, state.entries.length - size);
      }
      const position = { offset: state.offset, epoch: state.epoch };
      positions.push(position);
      if (idempotent) this.idempotency.set(marker, { position, expires: now + this.idempotencyMs });
      if (this.subscribed.has(channel)) {
        // Built from the publication this node just validated: no parse of its own encoding.
        message ??= messageOf(publication, value);
        this.deliveryHandler({ channel, offset: position.offset, epoch: position.epoch, message });
      }
    }
    return positions;
  }

  async publishMany(items: readonly PublishItem[]): Promise<Position[][]> {
    const out: Position[][] = [];
    for (const i of items) out.push(await this.publish(i.publication, i.channels, i.idempotent, i.key));
    return out;
  }

  async subscribe(channel: string): Promise<void> {
    this.subscribed.add(channel);
  }

  async unsubscribe(channel: string): Promise<void> {
    this.subscribed.delete(channel);
  }

  async positions(channels: readonly string[]): Promise<ChannelTop[]> {
    const now = this.now();
    return channels.map((c) => {
      const s = this.peek(c, now);
      return s ? { offset: s.offset, epoch: s.epoch, lastTs: s.lastTs } : UNBORN;
    });
  }

  async history(channel: string, after: number, limit: number): Promise<HistoryResult> {
    const now = this.now();
    const state = this.peek(channel, now);
    if (state === undefined) return { epoch: UNBORN_EPOCH, offset: 0, entries: [], complete: after === 0 };
    const minTs = now - this.retention(channel).ttl * 1000;
    const entries: HistoryEntry[] = [];
    for (const e of state.entries) {
      if (e.offset <= after || e.ts < minTs) continue;
      if (entries.length >= limit) break;
      entries.push({ channel, offset: e.offset, epoch: state.epoch, ts: e.ts, text: e.text });
    }
    const complete = after >= state.offset || entries[0]?.offset === after + 1;
    return { epoch: state.epoch, offset: state.offset, entries, complete: complete && after <= state.offset };
  }

  async idsAt(positions: readonly { channel: string; offset: number }[]): Promise<(string | undefined)[]> {
    return positions.map(({ channel, offset }) => {
      const e = this.channels.get(channel)?.entries.find((x) => x.offset === offset);
      if (!e) return undefined;
      try {
        return decodePublication(e.text).id;
      } catch {
        return undefined;
      }
    });
  }

  async renewEpoch(channel: string, expected: string): Promise<string> {
    const s = this.state(channel, this.now());
    if (s.epoch === expected) s.epoch = randomBytes(4).toString('hex');
    return s.epoch;
  }

  onDelivery(handler: (delivery: Delivery) => void): void {
    this.deliveryHandler = handler;
  }

  onResync(): void {
    // A memory subscription is never interrupted.
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }

  /** A channel's state if it was ever published to; reading creates nothing. */
  private peek(channel: string, now: number): ChannelState | undefined {
    const s = this.channels.get(channel);
    if (s !== undefined) s.lastUsed = now;
    return s;
  }

  private state(channel: string, now: number): ChannelState {
    let s = this.channels.get(channel);
    if (s === undefined) {
      s = { epoch: randomBytes(4).toString('hex'), offset: 0, entries: [], lastUsed: now, lastTs: 0 };
      this.channels.set(channel, s);
    }
    s.lastUsed = now;
    return s;
  }

  /** Drops expired idempotency ids, aged-out entries and channels idle for a day with nobody subscribed. */
  private sweep(): void {
    const now = this.now();
    for (const [k, v] of this.idempotency) if (v.expires <= now) this.idempotency.delete(k);
    for (const [channel, s] of this.channels) {
      const minTs = now - this.retention(channel).ttl * 1000;
      const firstKept = s.entries.findIndex((e) => e.ts >= minTs);
      if (firstKept === -1) s.entries = [];
      else if (firstKept > 0) s.entries.splice(0, firstKept);
      if (!this.subscribed.has(channel) && now - s.lastUsed > IDLE_CHANNEL_MS) this.channels.delete(channel);
    }
  }
}
